"""The ``dllmq`` command line: one sub-command per module in :mod:`dllm_bench.commands`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dllm_bench.commands import analyze, bench, evaluate, generate, methods, quantize, results

COMMANDS = {
    "analyze": analyze,
    "bench": bench,
    "eval": evaluate,
    "generate": generate,
    "methods": methods,
    "quantize": quantize,
    "results": results,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dllmq", description="Post-training quantization toolkit for diffusion language models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"dllmq {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
