"""Token-weighted Hessian of a Linear's input, streamed: ``H = sum_t w_t^2 x_t x_t^T / sum_t w_t^2``.

Exactly: for every target Linear the collector keeps the raw sum ``S = sum_t w_t^2 x_t x_t^T`` (``[C, C]``,
``C`` = in_features) over all real tokens ``t`` of all states, the weight mass ``M = sum_t w_t^2`` and the
number of tokens with ``w_t > 0``. ``HessianStats.hessian()`` returns ``S / M``: with uniform weights this is
the mean ``x x^T`` per token. GPTQ's reference keeps ``2/n sum X X^T``; the factor 2 and any global scale
do not change GPTQ's solution (its damping is relative to ``mean(diag H)``), so ``S / M`` can be handed to
it directly. Memory is ``O(C^2)`` per target (per bucket), whatever the number of states.

Linears that read the same input tensor (q/k/v, gate/up) share one ``X^T X`` per batch: the increment is
computed once and added to each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dllm_calib.batching import Batch
from dllm_calib.collectors.base import Collector, HookPoint, rows_by_bucket, weighted_tokens
from dllm_calib.collectors.weights import TokenWeighting, UniformWeight

__all__ = ["HessianCollector", "HessianStats"]


@dataclass
class HessianStats:
    """Raw accumulators of one layer (or one layer-bucket).

    Attributes:
        sum: ``[C, C]`` ``sum_t w_t^2 x_t x_t^T``.
        mass: ``sum_t w_t^2``.
        tokens: number of tokens with ``w_t > 0``.
    """

    sum: Tensor
    mass: float
    tokens: int

    def hessian(self) -> Tensor:
        """``sum / mass``, the weight-normalised Hessian ``[C, C]``.

        Raises:
            ValueError: if no token with a nonzero weight reached the layer.
        """
        if self.mass <= 0:
            raise ValueError("no token with a nonzero weight reached this layer; the Hessian is undefined")
        return self.sum / self.mass

    @staticmethod
    def merge(parts: Sequence[HessianStats]) -> HessianStats:
        """The accumulators of the union of the parts' tokens."""
        return HessianStats(
            sum=torch.stack([p.sum for p in parts]).sum(0),
            mass=sum(p.mass for p in parts),
            tokens=sum(p.tokens for p in parts),
        )


class HessianCollector(Collector):
    """Streams ``S``, ``M`` and the token count for the inputs of the target Linears.

    Args:
        weighting: per-token weights (default uniform); see `dllm_calib.collectors.weights`.
        num_buckets: if set, keep separate accumulators per mask-ratio bucket of the states
            (`dllm_calib.buckets`); `results` merges them, `bucket_results` returns them.
        dtype: accumulation dtype (float32 by default; float64 for exact studies).
        name: key of this collector's results.
    """

    def __init__(
        self,
        weighting: TokenWeighting | None = None,
        num_buckets: int | None = None,
        dtype: torch.dtype = torch.float32,
        name: str = "hessian",
    ) -> None:
        if num_buckets is not None and num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1 or None, got {num_buckets}")
        self.weighting = weighting if weighting is not None else UniformWeight()
        self.num_buckets = num_buckets
        self.dtype = dtype
        self.name = name
        self._stats: dict[str, list[HessianStats | None]] = {}
        self._weights: Tensor | None = None
        self._groups: list[tuple[int, Tensor]] = []
        self._last: tuple[Tensor, int, list[tuple[int, Tensor, float, int]]] | None = None

    def hook_points(self, targets: Sequence[str]) -> list[HookPoint]:
        return [HookPoint(t, "input") for t in targets]

    def begin_batch(self, batch: Batch) -> None:
        self._weights = self.weighting.weights(batch).to(batch.input_ids.device)
        self._groups = rows_by_bucket(batch, self.num_buckets)
        self._last = None

    def end_batch(self, batch: Batch) -> None:
        self._last = None

    def _increments(self, x: Tensor) -> list[tuple[int, Tensor, float, int]]:
        # Linears sharing an input (q/k/v, gate/up) are called back to back on the same tensor. Only the
        # last input is kept; holding it keeps its memory from being reused, so the same data pointer,
        # layout and version mean the same data.
        if self._last is not None:
            prev, version, incs = self._last
            same = prev.data_ptr() == x.data_ptr() and prev.shape == x.shape and prev.stride() == x.stride()
            if same and x._version == version:
                return incs
        assert self._weights is not None
        incs = []
        w = self._weights.to(x.device)
        for bucket, rows in self._groups:
            xk, wk = weighted_tokens(x, w, rows)
            xw = xk.to(self.dtype) * wk.to(self.dtype)[:, None]
            incs.append((bucket, xw.T @ xw, float((wk.double() ** 2).sum()), int(wk.numel())))
        self._last = (x, x._version, incs)
        return incs

    def observe(self, point: HookPoint, tensor: Tensor, batch: Batch) -> None:
        self._accumulate(point.module, self._increments(tensor))

    def _accumulate(
        self,
        module: str,
        increments: list[tuple[int, Tensor, float, int]],
        store: dict[str, list[HessianStats | None]] | None = None,
    ) -> None:
        """Add ``(bucket, X^T X increment, weight mass, tokens)`` entries to ``module``'s per-bucket stats in
        ``store`` (default: the collector's own)."""
        store = self._stats if store is None else store
        slots = store.setdefault(module, [None] * (self.num_buckets or 1))
        for bucket, inc, mass, tokens in increments:
            slot = slots[bucket]
            if slot is None:
                slots[bucket] = HessianStats(inc.clone(), mass, tokens)
            else:
                slot.sum += inc
                slot.mass += mass
                slot.tokens += tokens

    def bucket_results(self) -> dict[str, list[HessianStats]]:
        """Per target, one `HessianStats` per bucket (zeros for a bucket no state fell in)."""
        out = {}
        for module, slots in self._stats.items():
            ref = next(s for s in slots if s is not None)
            out[module] = [
                s if s is not None else HessianStats(torch.zeros_like(ref.sum), 0.0, 0) for s in slots
            ]
        return out

    def results(self) -> dict[str, HessianStats]:
        """Per target, the accumulators over all states (buckets merged)."""
        return {
            m: HessianStats.merge(parts) if len(parts) > 1 else parts[0]
            for m, parts in self.bucket_results().items()
        }
