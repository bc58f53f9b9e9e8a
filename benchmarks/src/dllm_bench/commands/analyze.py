"""``dllmq analyze``: where a (quantized) diffusion LM's error comes from, as plots and tables.

    dllmq analyze outliers --model M [--out DIR]
    dllmq analyze steps --model QUANTIZED [--reference FLOAT] [--problems N] [--out DIR]

``outliers`` measures ``max|x| / RMS(x)`` of every block Linear input per layer and mask-ratio bucket on
noised held-out arithmetic rows; ``steps`` measures the per-step error against the float model over the
denoising trajectory (teacher-forced KL and top-1 disagreement, free-running divergence). Each mode writes
``<mode>.png`` and ``<mode>.csv`` into ``--out`` (default ``runs/analyze-<model>-<mode>``) and prints a
short summary; a progress bar on stderr follows the forward passes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dllm_bench.commands._checks import add_device_and_dtype, check_model, check_out_folder

HELP = (
    "Analyze a model: activation outliers per layer and mask ratio (outliers), or the per-step error of a "
    "quantized model against its float reference (steps); writes a PNG and a CSV."
)

DEFAULT_PROBLEMS = {"outliers": 16, "steps": 16}


def _common_arguments(parser: argparse.ArgumentParser, mode: str) -> None:
    parser.add_argument("--model", required=True, help="shipped model name, checkpoint or quantized folder")
    parser.add_argument("--out", type=Path, help=f"output folder (default runs/analyze-<model>-{mode})")
    parser.add_argument(
        "--problems",
        type=int,
        default=DEFAULT_PROBLEMS[mode],
        help=f"held-out arithmetic problems (default {DEFAULT_PROBLEMS[mode]})",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="rows per forward pass")
    add_device_and_dtype(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    modes = parser.add_subparsers(dest="mode", required=True, metavar="{outliers,steps}")
    outliers = modes.add_parser(
        "outliers",
        help="max|x| / RMS(x) of every block Linear input per layer and mask-ratio bucket",
        description="Activation outliers of every block Linear input on noised held-out arithmetic rows.",
    )
    _common_arguments(outliers, "outliers")
    outliers.add_argument("--buckets", type=int, default=4, help="mask-ratio buckets (default 4)")
    steps = modes.add_parser(
        "steps",
        help="per-step error of a quantized model against its float reference",
        description="Teacher-forced KL / top-1 disagreement and free-running divergence per sampler step.",
    )
    _common_arguments(steps, "steps")
    steps.add_argument(
        "--reference",
        help="the float model (default: the float model named in --model's dllmq_provenance.json)",
    )


def out_dir(args: argparse.Namespace) -> Path:
    """``--out`` or ``runs/analyze-<model>-<mode>``."""
    return args.out or Path("runs") / f"analyze-{Path(args.model).name or 'model'}-{args.mode}"


def check(args: argparse.Namespace) -> None:
    for flag, value in (("--problems", args.problems), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if args.mode == "outliers" and args.buckets < 1:
        raise ValueError(f"--buckets must be >= 1, got {args.buckets}")
    check_model(args.model)
    if args.mode == "steps" and args.reference is not None:
        check_model(args.reference, "--reference")
    check_out_folder(out_dir(args))


def run(args: argparse.Namespace) -> int:
    from dllm_bench.commands.work import analyze

    return analyze.run(args)
