"""The work of ``dllmq analyze`` (arguments and docs: `dllm_bench.commands.analyze`)."""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dllm_sampler import DiffusionLM
from dllm_sampler.atomic import atomic_file
from tqdm import tqdm

from dllm_bench.commands.analyze import out_dir
from dllm_bench.devices import compute_dtype, parse_device
from dllm_bench.evaluation import (
    OutlierRow,
    StepRow,
    activation_outliers,
    plot_outliers,
    plot_step_error,
    step_error,
)
from dllm_bench.loading import default_reference, load_any


def _write_csv(rows: Sequence[StepRow] | Sequence[OutlierRow], path: Path) -> Path:
    """Write ``rows`` (dataclasses with ``to_dict``) as CSV, atomically, with the umask's permissions."""
    records = [r.to_dict() for r in rows]
    with atomic_file(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return path


@contextmanager
def _progress_bar(args: argparse.Namespace, what: str) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar on stderr, as the ``progress(done, total)`` callback the analyses take."""
    with tqdm(desc=what, unit="step", disable=args.no_progress, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield progress


def _load(name: str, args: argparse.Namespace) -> DiffusionLM:
    device = parse_device(args.device)
    return load_any(name, dtype=compute_dtype(args.dtype, device), device=device)


def _run_outliers(args: argparse.Namespace) -> int:
    dlm = _load(args.model, args)
    with _progress_bar(args, "outliers: forward passes") as progress:
        rows = activation_outliers(
            dlm,
            problems=args.problems,
            num_buckets=args.buckets,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=progress,
        )
    out = out_dir(args)
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
    reference_name = args.reference or default_reference(args.model)
    model = _load(args.model, args)
    reference = _load(reference_name, args)
    with _progress_bar(args, "steps: sampler steps") as progress:
        rows = step_error(
            model, reference, args.problems, batch_size=args.batch_size, seed=args.seed, progress=progress
        )
    out = out_dir(args)
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
