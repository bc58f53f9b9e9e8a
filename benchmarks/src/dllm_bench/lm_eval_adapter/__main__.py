"""``python -m dllm_bench.lm_eval_adapter ARGS``: lm-eval's command line with the ``dllmq`` model registered.

Takes exactly the arguments of the ``lm_eval`` command (``--model dllmq --model_args ... --tasks ...``).
"""

from lm_eval.__main__ import cli_evaluate

import dllm_bench.lm_eval_adapter  # noqa: F401  (registers "dllmq")


def main() -> None:
    """Run lm-eval's command line (it reads ``sys.argv``)."""
    cli_evaluate()


if __name__ == "__main__":
    main()
