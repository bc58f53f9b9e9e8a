"""Mask-ratio buckets, shared by TMAS and the bucketed statistics.

``K`` equal-width buckets over the mask ratio ``r`` in [0, 1], numbered in denoising order: bucket 0 holds
the earliest, most-masked states, ``r in (1 - 1/K, 1]``; bucket ``k`` holds ``r in (1 - (k+1)/K, 1 - k/K]``;
the last bucket also includes ``r = 0``. With ``K = 4``: (0.75, 1], (0.5, 0.75], (0.25, 0.5], [0, 0.25].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["bucket_of", "mask_ratio_buckets", "quota_counts"]


def bucket_of(ratio: float, num_buckets: int) -> int:
    """The bucket (0 = most masked) of one mask ratio in [0, 1]."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    return min(num_buckets - 1, math.floor((1.0 - ratio) * num_buckets))


def mask_ratio_buckets(ratios: Tensor, num_buckets: int) -> Tensor:
    """``[N]`` int64 buckets of ``[N]`` mask ratios (see `bucket_of`)."""
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    r = ratios.to(torch.float64)
    if bool(((r < 0) | (r > 1)).any()):
        raise ValueError("mask ratios must be in [0, 1]")
    return torch.floor((1.0 - r) * num_buckets).to(torch.int64).clamp(max=num_buckets - 1)


def quota_counts(quotas: Sequence[float], total: int) -> list[int]:
    """Split ``total`` items by ``quotas`` (summing to 1) with the largest-remainder rule; sums to ``total``.

    Ties in the remainder go to the earlier bucket, so the result is deterministic.
    """
    raw = [q * total for q in quotas]
    counts = [math.floor(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts
