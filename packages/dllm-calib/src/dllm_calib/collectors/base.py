"""The collector interface the `collect` driver drives.

A collector names the module outputs/inputs it needs (`hook_points`), sees every batch's tensors there
(`observe`, between `begin_batch` and `end_batch`) and accumulates a statistic. Collectors are stateful:
running `collect` twice with the same collector accumulates over both runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from dllm_calib.batching import Batch
from dllm_calib.buckets import mask_ratio_buckets

__all__ = ["Collector", "HookPoint", "rows_by_bucket", "weighted_tokens"]

HookKind = Literal["input", "output"]


@dataclass(frozen=True)
class HookPoint:
    """A tensor to observe: the first positional input or the output of the module ``module``."""

    module: str
    kind: HookKind


class Collector(ABC):
    """Base class of the statistics collectors; ``name`` keys its results in `collect`'s return value."""

    name: str

    @abstractmethod
    def hook_points(self, targets: Sequence[str]) -> list[HookPoint]:
        """The tensors this collector needs, given the driver's target Linear names."""

    def begin_batch(self, batch: Batch) -> None:  # noqa: B027 (optional hook)
        """Called before the forward pass of ``batch``."""

    @abstractmethod
    def observe(self, point: HookPoint, tensor: Tensor, batch: Batch) -> None:
        """Receive ``tensor`` (``[B, L, C]``, detached, finite) seen at ``point`` during ``batch``'s "
        "forward."""

    def end_batch(self, batch: Batch) -> None:  # noqa: B027 (optional hook)
        """Called after the forward pass of ``batch``."""

    @abstractmethod
    def results(self) -> dict[str, Any]:
        """The accumulated statistic per module (or site), over all states."""


def rows_by_bucket(batch: Batch, num_buckets: int | None) -> list[tuple[int, Tensor]]:
    """``(bucket, row indices [b] int64)`` for each bucket present in ``batch``; one bucket 0 when None."""
    device = batch.input_ids.device
    if num_buckets is None:
        return [(0, torch.arange(batch.input_ids.shape[0], device=device))]
    buckets = mask_ratio_buckets(batch.mask_ratio.cpu(), num_buckets)
    return [(int(k), (buckets == k).nonzero().squeeze(1).to(device)) for k in buckets.unique()]


def weighted_tokens(x: Tensor, w: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """The tokens of ``rows`` with nonzero weight: ``(x [n, C], w [n])`` from ``x [B, L, C]``, ``w [B, L]``.

    Avoids copies in the common case (all rows, no zero weight).
    """
    if rows.numel() != x.shape[0]:
        x, w = x[rows], w[rows]
    keep = w > 0
    if bool(keep.all()):
        return x.reshape(-1, x.shape[-1]), w.reshape(-1)
    return x[keep], w[keep]
