"""Hessians of routed experts' linears: each expert's ``H`` over exactly the tokens routed to it.

A routed expert's linears receive ``x [n_e, C]``, the rows of the flattened MoE input ``h [B * L, D]``
(or their intermediate activations) that the router sent to expert ``e``, in ascending token order
(``dllm_sampler.models.llada2_moe.LLaDA2SparseMoe``). `RoutedHessianCollector` also hooks the block's
``Routing`` site (``experts [B * L, k]``, seen before the experts run) and maps every routed row back to
its position ``(b, l)``, so the token weighting (zeros on padding, CGQ's certainty weights) and the
mask-ratio buckets apply per token exactly as for a dense linear. Inputs of other targets (``[B, L, C]``)
go through the plain `HessianCollector` path. ``HessianStats.tokens`` of an expert linear is its coverage:
routed tokens with a nonzero weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from dllm_calib.batching import Batch
from dllm_calib.collectors.base import HookPoint
from dllm_calib.collectors.hessian import HessianCollector, HessianStats
from dllm_calib.collectors.weights import TokenWeighting

__all__ = ["RoutedHessianCollector", "routed_tokens"]


def routed_tokens(experts: Tensor, expert: int) -> Tensor:
    """Flat token indices ``[n_e]`` (ascending) whose routing ``experts [N, k]`` chose ``expert``."""
    return (experts == expert).any(dim=-1).nonzero().squeeze(1)


class RoutedHessianCollector(HessianCollector):
    """`HessianCollector` whose targets may include routed expert linears.

    Args:
        routes: holder name of each routed expert linear -> (qualified name of its `Routing` site, expert
            index). Targets not in ``routes`` are ordinary ``[B, L, C]`` inputs.
        weighting, num_buckets, dtype, name: as `HessianCollector`.
        reserve_from: states with this index or above (``Batch.indices``) are a reserve (``starved:
            targeted``): no target's `results` reads them; `reserve_results` holds each routed expert's
            accumulators over them (buckets merged). None: no reserve.
    """

    def __init__(
        self,
        routes: Mapping[str, tuple[str, int]],
        weighting: TokenWeighting | None = None,
        num_buckets: int | None = None,
        dtype: torch.dtype = torch.float32,
        name: str = "hessian",
        reserve_from: int | None = None,
    ) -> None:
        super().__init__(weighting, num_buckets, dtype, name)
        self.routes = dict(routes)
        self.reserve_from = reserve_from
        self._routing: dict[str, Tensor] = {}
        self._reserve_weights: Tensor | None = None
        self._reserve_last: tuple[Tensor, int, list[tuple[int, Tensor, float, int]]] | None = None
        self._reserve: dict[str, list[HessianStats | None]] = {}  # bucket 0 only: buckets merged

    def hook_points(self, targets: Sequence[str]) -> list[HookPoint]:
        sites = dict.fromkeys(self.routes[t][0] for t in targets if t in self.routes)
        return [HookPoint(site, "input") for site in sites] + super().hook_points(targets)

    def begin_batch(self, batch: Batch) -> None:
        super().begin_batch(batch)
        self._routing = {}
        self._reserve_weights, self._reserve_last = None, None
        if self.reserve_from is not None and self._weights is not None:
            reserve = torch.tensor(
                [i >= self.reserve_from for i in batch.indices], device=self._weights.device
            )
            if bool(reserve.any()):
                self._reserve_weights = self._weights * reserve[:, None]
                self._weights = self._weights * ~reserve[:, None]

    def observe(self, point: HookPoint, tensor: Tensor, batch: Batch) -> None:
        if point.module not in self.routes:
            if any(point.module == site for site, _ in self.routes.values()):
                self._routing[point.module] = tensor
                return
            super().observe(point, tensor, batch)
            return
        site, expert = self.routes[point.module]
        if site not in self._routing:
            raise RuntimeError(
                f"{point.module}: its routing site {site!r} did not fire before the expert ran"
            )
        experts = self._routing[site]
        assert self._weights is not None
        incs, self._last = self._routed_increments(
            tensor, experts, expert, self._weights, self._groups, self._last
        )
        self._accumulate(point.module, incs)
        if self._reserve_weights is not None:
            everything = [(0, torch.arange(self._reserve_weights.shape[0]))]
            incs, self._reserve_last = self._routed_increments(
                tensor, experts, expert, self._reserve_weights, everything, self._reserve_last
            )
            self._accumulate(point.module, incs, self._reserve)

    def reserve_results(self) -> dict[str, HessianStats]:
        """Per routed expert linear that received reserve tokens, its accumulators over them."""
        return {module: slots[0] for module, slots in self._reserve.items() if slots[0] is not None}

    def _routed_increments(
        self,
        x: Tensor,
        experts: Tensor,
        expert: int,
        weights: Tensor,
        groups: list[tuple[int, Tensor]],
        last: tuple[Tensor, int, list[tuple[int, Tensor, float, int]]] | None,
    ) -> tuple[
        list[tuple[int, Tensor, float, int]], tuple[Tensor, int, list[tuple[int, Tensor, float, int]]]
    ]:
        """The ``(bucket, X^T X, mass, tokens)`` increments of one expert's input ``x`` under ``weights
        [B, L]`` and the cache entry to keep; gate/up of one expert read the same tensor, so ``last`` (the
        previous entry) is reused when ``x`` is the same data (as the dense path does)."""
        if last is not None:
            prev, version, incs = last
            if prev.data_ptr() == x.data_ptr() and prev.shape == x.shape and x._version == version:
                return incs, last
        token = routed_tokens(experts, expert).to(x.device)
        if token.numel() != x.shape[0]:
            raise RuntimeError(
                f"expert {expert} received {x.shape[0]} rows but its routing chose {token.numel()} tokens"
            )
        length = weights.shape[1]
        w = weights.to(x.device).reshape(-1)[token]
        row = token // length
        incs = []
        for bucket, rows in groups:
            keep = torch.isin(row, rows.to(x.device)) & (w > 0)
            xk, wk = x[keep], w[keep]
            xw = xk.to(self.dtype) * wk.to(self.dtype)[:, None]
            incs.append((bucket, xw.T @ xw, float((wk.double() ** 2).sum()), int(wk.numel())))
        return incs, (x, x._version, incs)
