"""The ``dllmq`` command line: one sub-command per module in :mod:`dllm_bench.commands`.

Arguments are parsed and checked (paths, counts) with the standard library only; a command's heavy
imports (torch, numba, matplotlib, triton) happen in its ``run``, so help and argument errors are instant.
Bad input ends in one line on stderr and exit code 2, an interrupt in one line and exit code 130.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from dllm_bench.commands import analyze, bench, calib, evaluate, export, generate, methods, quantize, results

COMMANDS = {
    "analyze": analyze,
    "bench": bench,
    "calib": calib,
    "eval": evaluate,
    "export": export,
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


BAD_INPUT = (
    ValueError,
    KeyError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)
"""Errors that describe a bad argument or input file: reported in one line with exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = COMMANDS[args.command]
    try:
        with _sigterm_as_interrupt():
            command.check(args)
            return command.run(args)
    except BAD_INPUT as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"dllmq {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"dllmq {args.command}: {stop or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
