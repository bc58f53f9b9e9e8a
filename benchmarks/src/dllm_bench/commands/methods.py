"""``dllmq methods``: the registered quantization methods, read from ``dllm_calib``'s registry.

One block per method in stage order: its stage, config class and default parameters, the statistics
its default config collects, what it changes, and whether it runs only with quantized activations.
"""

from __future__ import annotations

import argparse

HELP = "List the registered quantization methods (what recipes can name), with their stage and needs."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="only these methods (default: all)")


def check(args: argparse.Namespace) -> None:
    """Nothing to check before the registry is loaded: unknown names are reported by `run`."""


def run(args: argparse.Namespace) -> int:
    from dllm_bench.commands.work import methods

    return methods.run(args)
