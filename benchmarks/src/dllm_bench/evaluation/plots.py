"""PNG plots of the per-step error and the activation outliers (matplotlib's Agg canvas, no display).

Figures are drawn on a plain ``matplotlib.figure.Figure`` with an Agg canvas, so nothing touches pyplot's
global state or needs a display. Files are written atomically (``dllm_sampler.atomic.atomic_file``: a
temporary name in the target folder, then one rename) with the permissions the process umask gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dllm_sampler.atomic import atomic_file
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dllm_bench.evaluation.outliers import INPUT_ROLES, OutlierRow
from dllm_bench.evaluation.steps import StepRow

__all__ = ["plot_outliers", "plot_step_error", "save_figure"]


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG at ``path`` atomically (the folder is created if missing); returns it."""
    path = Path(path)
    FigureCanvasAgg(figure)
    with atomic_file(path, "wb") as fh:
        figure.savefig(fh, format="png", dpi=120)
    return path


def plot_step_error(rows: Sequence[StepRow], path: str | Path, title: str = "") -> Path:
    """Two panels over the sampler steps: the teacher-forced KL (top, with the mask ratio on a second
    axis) and the teacher-forced top-1 disagreement and free-running divergence (bottom)."""
    if not rows:
        raise ValueError("no step rows to plot")
    steps = [r.step for r in rows]
    figure = Figure(figsize=(7.5, 6.0), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    top.plot(steps, [r.kl for r in rows], color="tab:red", marker=".", label="KL(ref || model)")
    top.set_ylabel("teacher-forced KL (nats/token)")
    ratio_axis = top.twinx()
    ratio_axis.plot(steps, [r.mask_ratio for r in rows], color="tab:gray", linestyle="--", label="mask ratio")
    ratio_axis.set_ylabel("mask ratio")
    ratio_axis.set_ylim(0.0, 1.05)
    top.legend(loc="upper left")
    ratio_axis.legend(loc="upper right")
    bottom.plot(steps, [r.disagreement for r in rows], marker=".", label="teacher-forced top-1 disagreement")
    bottom.plot(steps, [r.divergence for r in rows], marker=".", label="free-running divergence")
    bottom.set_xlabel("sampler step")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_ylabel("fraction of tokens")
    bottom.set_ylim(-0.02, 1.02)
    bottom.legend(loc="best")
    figure.suptitle(title or "per-step error against the reference")
    return save_figure(figure, path)


def plot_outliers(rows: Sequence[OutlierRow], path: str | Path, title: str = "") -> Path:
    """One panel per Linear input role: the outlier ratio ``max|x| / RMS(x)`` against the layer, one line
    per mask-ratio bucket."""
    if not rows:
        raise ValueError("no outlier rows to plot")
    roles = [r for r in INPUT_ROLES if any(row.role == r for row in rows)]
    figure = Figure(figsize=(4.0 * len(roles), 3.6), layout="constrained")
    axes = figure.subplots(1, len(roles), sharey=True, squeeze=False)[0]
    buckets = sorted({(r.bucket, r.mask_lo, r.mask_hi) for r in rows})
    for axis, role in zip(axes, roles, strict=True):
        for bucket, lo, hi in buckets:
            picked = sorted((r.layer, r.outlier_ratio) for r in rows if r.role == role and r.bucket == bucket)
            if picked:
                layers, ratios = zip(*picked, strict=True)
                axis.plot(layers, ratios, marker="o", label=f"mask {lo:.2f}-{hi:.2f}")
        axis.set_title(role)
        axis.set_xlabel("layer")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("max|x| / RMS(x)")
    axes[0].legend(loc="best", fontsize="small")
    figure.suptitle(title or "activation outliers of the block Linear inputs")
    return save_figure(figure, path)
