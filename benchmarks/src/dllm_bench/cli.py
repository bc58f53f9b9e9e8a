"""The ``dllmq`` command line: one sub-command per module in :mod:`dllm_bench.commands`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

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


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a job scheduler's stop) unwinds like Ctrl-C while inside: cleanups run, staging
    and temp files go. The previous handler is put back on exit."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt("terminated (SIGTERM)")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _sigterm_as_interrupt():
            return COMMANDS[args.command].run(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"dllmq {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"dllmq {args.command}: {stop or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
