"""Sub-commands of the ``dllmq`` CLI: each module has HELP, add_arguments(parser) and run(args)."""
