"""``dllmq eval``: score a (quantized) diffusion LM, and compare it with its float reference.

    dllmq eval --model M [--reference F] [--problems N] [--speed] [--json FILE]

Prints held-out arithmetic exact match and answer characters (models trained on the arithmetic task), the
held-out code ELBO NLL, the weight memory, and with a reference the fidelity per mask ratio (top-1
agreement, KL on masked positions) and the same task numbers for the reference. ``--speed`` adds the
sampler's ms per step and tokens/s. The reference defaults to the float model a quantized folder's
provenance names. A progress bar on stderr follows the measurements.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dllm_bench.commands._checks import add_device_and_dtype, check_model, check_out_file

HELP = "Score a model (arithmetic, code NLL, memory, speed) and its fidelity to the float reference."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-llada", help="shipped name, checkpoint or quantized folder")
    parser.add_argument(
        "--reference", help="float model to compare with (default: a quantized folder's source model)"
    )
    parser.add_argument("--problems", type=int, default=200, help="held-out arithmetic problems")
    parser.add_argument("--code-chunks", type=int, default=32, help="held-out code chunks for the NLL")
    parser.add_argument("--mc-num", type=int, default=16, help="Monte-Carlo samples per code chunk")
    parser.add_argument(
        "--ratios", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9], help="fidelity mask ratios"
    )
    parser.add_argument("--speed", action="store_true", help="also time the sampler (64 tokens, 64 steps)")
    add_device_and_dtype(parser)
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every number to this file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def check(args: argparse.Namespace) -> None:
    if args.problems < 0 or args.code_chunks < 0 or args.mc_num < 1:
        raise ValueError("--problems and --code-chunks must be >= 0 and --mc-num >= 1")
    if not all(0.0 < r <= 1.0 for r in args.ratios):
        raise ValueError(f"--ratios must lie in (0, 1], got {args.ratios}")
    check_model(args.model)
    if args.reference is not None:
        check_model(args.reference, "--reference")
    if args.json is not None:
        check_out_file(args.json, "--json")


def run(args: argparse.Namespace) -> int:
    from dllm_bench.commands.work import evaluate

    return evaluate.run(args)
