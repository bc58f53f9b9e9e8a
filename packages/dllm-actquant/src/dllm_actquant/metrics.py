"""Measurements of how quantizable activations are (used by tests and analysis)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["channel_spread", "outlier_ratio", "range_imbalance"]


def outlier_ratio(x: Tensor) -> float:
    """Mean over tokens of ``max_c |x_tc| / rms_c(x_tc)`` for ``x [..., C]`` (1 for a flat token, up to
    ``sqrt(C)`` for a single spike); the per-token dynamic range a quantizer must cover."""
    flat = x.reshape(-1, x.shape[-1]).to(torch.float64)
    rms = flat.pow(2).mean(-1).sqrt().clamp_min(torch.finfo(torch.float64).tiny)
    return float((flat.abs().amax(-1) / rms).mean())


def channel_spread(absmax: Tensor) -> float:
    """``max_c a_c / median_c a_c`` of a per-channel absmax ``[C]``: how far outlier channels stick out."""
    a = absmax.to(torch.float64)
    return float(a.max() / a.median().clamp_min(torch.finfo(torch.float64).tiny))


def range_imbalance(act_absmax: Tensor, weight_absmax: Tensor) -> float:
    """SmoothQuant's target: with ``r_c = max|X_c| / max|W_c|``, the spread ``max_c r_c / min_c r_c``.

    SmoothQuant at alpha 0.5 equalizes the activation and weight ranges of every channel, so the spread
    drops to 1 on the calibration data. Channels with zero activation or weight range are ignored.
    """
    a, w = act_absmax.to(torch.float64), weight_absmax.to(torch.float64)
    live = (a > 0) & (w > 0)
    if not bool(live.any()):
        raise ValueError("no channel has both a nonzero activation and weight range")
    r = a[live] / w[live]
    return float(r.max() / r.min())
