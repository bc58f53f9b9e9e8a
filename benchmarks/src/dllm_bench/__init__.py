"""dllm_bench: the ``dllmq`` command line, recipes, evaluation and benchmark suites of dllmq."""

__all__: list[str] = []
