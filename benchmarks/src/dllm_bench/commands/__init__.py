"""Sub-commands of the ``dllmq`` CLI, import-light: each module has HELP, add_arguments(parser), check(args)
(cheap validation, standard library only) and run(args), which imports the command's work module from
:mod:`dllm_bench.commands.work` lazily."""
