"""``dllmq analyze``: where a (quantized) diffusion LM's error comes from, as plots and tables.

    dllmq analyze outliers --model M [--out DIR]
    dllmq analyze steps --model QUANTIZED [--reference FLOAT] [--problems N] [--out DIR]

``outliers`` measures ``max|x| / RMS(x)`` of every block Linear input per layer and mask-ratio bucket on
noised held-out arithmetic rows; ``steps`` measures the per-step error against the float model over the
denoising trajectory (teacher-forced KL and top-1 disagreement, free-running divergence). Each mode writes
``<mode>.png`` and ``<mode>.csv`` into ``--out`` (default ``runs/analyze-<model>-<mode>``) and prints a
short summary.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from dllm_sampler import DiffusionLM

from dllm_bench.devices import parse_device
from dllm_bench.evaluation import (
    OutlierRow,
    StepRow,
    activation_outliers,
    plot_outliers,
    plot_step_error,
    step_error,
)
from dllm_bench.loading import default_reference, load_any

HELP = (
    "Analyze a model: activation outliers per layer and mask ratio (outliers), or the per-step error of a "
    "quantized model against its float reference (steps); writes a PNG and a CSV."
)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
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
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None, help="compute dtype")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)


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


def _write_csv(rows: Sequence[StepRow] | Sequence[OutlierRow], path: Path) -> Path:
    """Write ``rows`` (dataclasses with ``to_dict``) as CSV, atomically."""
    records = [r.to_dict() for r in rows]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _out_dir(args: argparse.Namespace) -> Path:
    out = args.out or Path("runs") / f"analyze-{Path(args.model).name or 'model'}-{args.mode}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _check_counts(args: argparse.Namespace) -> None:
    for flag, value in (("--problems", args.problems), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")


def _load(name: str, args: argparse.Namespace) -> DiffusionLM:
    return load_any(name, dtype=_DTYPES[args.dtype] if args.dtype else None, device=parse_device(args.device))


def _run_outliers(args: argparse.Namespace) -> int:
    _check_counts(args)
    if args.buckets < 1:
        raise ValueError(f"--buckets must be >= 1, got {args.buckets}")
    dlm = _load(args.model, args)
    rows = activation_outliers(
        dlm, problems=args.problems, num_buckets=args.buckets, batch_size=args.batch_size, seed=args.seed
    )
    out = _out_dir(args)
    png = plot_outliers(rows, out / "outliers.png", title=f"activation outliers: {args.model}")
    table = _write_csv(rows, out / "outliers.csv")
    print(
        f"activation outliers of {args.model}: {len(dlm.topology)} layers, {args.problems} problems x "
        f"{args.buckets} mask-ratio buckets"
    )
    print("  largest max|x|/RMS(x) per Linear input (over layers and buckets):")
    for role in dict.fromkeys(r.role for r in rows):
        worst = max((r for r in rows if r.role == role), key=lambda r: r.outlier_ratio)
        print(
            f"    {role:<8} {worst.outlier_ratio:8.1f}  (layer {worst.layer}, mask {worst.mask_lo:.2f}-"
            f"{worst.mask_hi:.2f}, max|x| {worst.absmax:.3g})"
        )
    print(f"wrote {png} and {table}")
    return 0


def _phase_summary(rows: Sequence[StepRow]) -> list[str]:
    """One line per quarter of the steps: mask ratios, mean KL, disagreement and final divergence."""
    lines = [f"  {'steps':>9} {'mask ratio':>11} {'KL (nats)':>10} {'disagree':>9} {'divergence':>10}"]
    n = len(rows)
    for q in range(4):
        part = rows[q * n // 4 : (q + 1) * n // 4]
        if not part:
            continue
        positions = sum(r.positions for r in part)
        kl = sum(r.kl * r.positions for r in part) / positions if positions else 0.0
        disagree = sum(r.disagreement * r.positions for r in part) / positions if positions else 0.0
        steps = f"{part[0].step}-{part[-1].step}"
        ratios = f"{part[0].mask_ratio:.2f}-{part[-1].mask_ratio:.2f}"
        lines.append(f"  {steps:>9} {ratios:>11} {kl:>10.3g} {disagree:>9.1%} {part[-1].divergence:>10.1%}")
    return lines


def _run_steps(args: argparse.Namespace) -> int:
    _check_counts(args)
    reference_name = args.reference or default_reference(args.model)
    model = _load(args.model, args)
    reference = _load(reference_name, args)
    rows = step_error(model, reference, args.problems, batch_size=args.batch_size, seed=args.seed)
    out = _out_dir(args)
    title = f"{args.model} vs {reference_name}"
    png = plot_step_error(rows, out / "steps.png", title=title)
    table = _write_csv(rows, out / "steps.csv")
    print(f"per-step error of {title}: {args.problems} held-out arithmetic problems, {len(rows)} steps")
    print("\n".join(_phase_summary(rows)))
    print(f"wrote {png} and {table}")
    return 0


_MODES: dict[str, Callable[[argparse.Namespace], int]] = {"outliers": _run_outliers, "steps": _run_steps}


def run(args: argparse.Namespace) -> int:
    return _MODES[args.mode](args)
