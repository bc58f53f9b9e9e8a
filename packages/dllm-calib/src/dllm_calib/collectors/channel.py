"""Per-channel activation ranges of a Linear's input (or output): absmax and (weighted) mean |x|.

For every target and channel ``c``: ``absmax_c = max_t |x_tc|`` over tokens with ``w_t > 0`` and
``mean_abs_c = sum_t w_t |x_tc| / sum_t w_t`` (the plain mean |x| with uniform weights; AWQ's activation
statistic with CGQ weights, docs/references.md#cgq). These feed SmoothQuant/AWQ/DuQuant scales and
static clip ranges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from dllm_calib.batching import Batch
from dllm_calib.collectors.base import Collector, HookPoint, rows_by_bucket, weighted_tokens
from dllm_calib.collectors.weights import TokenWeighting, UniformWeight

__all__ = ["ChannelStats", "ChannelStatsCollector"]


@dataclass
class ChannelStats:
    """Accumulators of one layer (or layer-bucket).

    Attributes:
        absmax: ``[C]`` max |x| per channel (0 if no token was seen).
        abs_sum: ``[C]`` ``sum_t w_t |x_t|``.
        weight_sum: ``sum_t w_t``.
        tokens: tokens with ``w_t > 0``.
    """

    absmax: Tensor
    abs_sum: Tensor
    weight_sum: float
    tokens: int

    @property
    def mean_abs(self) -> Tensor:
        """``[C]`` weighted mean |x| (``abs_sum / weight_sum``)."""
        if self.weight_sum <= 0:
            raise ValueError("no token with a nonzero weight reached this layer; mean |x| is undefined")
        return self.abs_sum / self.weight_sum

    @staticmethod
    def merge(parts: Sequence[ChannelStats]) -> ChannelStats:
        """The accumulators of the union of the parts' tokens."""
        return ChannelStats(
            absmax=torch.stack([p.absmax for p in parts]).amax(0),
            abs_sum=torch.stack([p.abs_sum for p in parts]).sum(0),
            weight_sum=sum(p.weight_sum for p in parts),
            tokens=sum(p.tokens for p in parts),
        )


class ChannelStatsCollector(Collector):
    """Streams per-channel absmax and weighted sum |x| of the targets' inputs (or outputs).

    Args:
        weighting: per-token weights (default uniform).
        num_buckets: optional mask-ratio buckets (see `HessianCollector`).
        side: ``"input"`` (what a Linear reads; SmoothQuant/AWQ) or ``"output"`` (e.g. ``v_proj``'s V).
        dtype: accumulation dtype.
        name: key of this collector's results.
    """

    def __init__(
        self,
        weighting: TokenWeighting | None = None,
        num_buckets: int | None = None,
        side: Literal["input", "output"] = "input",
        dtype: torch.dtype = torch.float32,
        name: str = "channel_stats",
    ) -> None:
        if side not in ("input", "output"):
            raise ValueError(f"side must be 'input' or 'output', got {side!r}")
        if num_buckets is not None and num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1 or None, got {num_buckets}")
        self.weighting = weighting if weighting is not None else UniformWeight()
        self.num_buckets, self.side, self.dtype, self.name = num_buckets, side, dtype, name
        self._stats: dict[str, list[ChannelStats | None]] = {}
        self._weights: Tensor | None = None
        self._groups: list[tuple[int, Tensor]] = []

    def hook_points(self, targets: Sequence[str]) -> list[HookPoint]:
        return [HookPoint(t, self.side) for t in targets]

    def begin_batch(self, batch: Batch) -> None:
        self._weights = self.weighting.weights(batch).to(batch.input_ids.device)
        self._groups = rows_by_bucket(batch, self.num_buckets)

    def observe(self, point: HookPoint, tensor: Tensor, batch: Batch) -> None:
        assert self._weights is not None
        slots = self._stats.setdefault(point.module, [None] * (self.num_buckets or 1))
        w = self._weights.to(tensor.device)
        for bucket, rows in self._groups:
            xk, wk = weighted_tokens(tensor, w, rows)
            x, wk = xk.to(self.dtype).abs(), wk.to(self.dtype)
            absmax = x.amax(0) if x.shape[0] else x.new_zeros(x.shape[1])
            part = ChannelStats(absmax, (x * wk[:, None]).sum(0), float(wk.double().sum()), int(wk.numel()))
            slot = slots[bucket]
            slots[bucket] = part if slot is None else ChannelStats.merge([slot, part])

    def bucket_results(self) -> dict[str, list[ChannelStats]]:
        """Per target, one `ChannelStats` per bucket (zeros for a bucket no state fell in)."""
        out = {}
        for module, slots in self._stats.items():
            ref = next(s for s in slots if s is not None)
            zero = torch.zeros_like(ref.absmax)
            out[module] = [
                s if s is not None else ChannelStats(zero.clone(), zero.clone(), 0.0, 0) for s in slots
            ]
        return out

    def results(self) -> dict[str, ChannelStats]:
        """Per target, the accumulators over all states (buckets merged)."""
        return {
            m: ChannelStats.merge(parts) if len(parts) > 1 else parts[0]
            for m, parts in self.bucket_results().items()
        }
