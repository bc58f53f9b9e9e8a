"""The weight-quantizer step shared by every quantizer: quantize a unit's block linears in place.

`quantize_linears` runs one quantizer function, ``fn(weight [out, in], hessian [in, in] | None, spec,
config)``, on every block linear of a `MethodContext` that the recipe does not ignore, and puts a
``QuantLinear`` (fake mode: the dequantized weight, the fastest way to propagate through the block on
any device) in place of the layer that held the weight (through run-time wrappers such as an online
rotation, so the quantizer sees the rotated inputs it will be multiplied with).

Quantizers that read the layer Hessian collect it with ``dllm_calib.RoutedHessianCollector`` (under the
quantizer's token weighting, e.g. CGQ's certainty weights) on the unit's feed. With
``context.true_sequential`` they quantize group by group (the block topology's ``input_groups``: q/k/v, o,
gate/up, down; in a mixture-of-experts layer every expert's gate/up, then every down), each group's
Hessians collected after the earlier groups were quantized; otherwise all linears from one pass.

Mixture of experts: a routed expert's Hessian covers only the tokens routed to it (its coverage, the log
row's ``tokens``). An expert with fewer than ``context.expert_policy.threshold(in_features)`` tokens is
starved and is quantized as the policy says: ``"shared"``, with the pooled Hessian of the same linear of
every routed expert of the layer (their raw sums and masses added); ``"rtn"``, round to nearest;
``"targeted"``, its own tokens plus those routed to it from the calibration set's reserve states
(``context.reserve_from`` on, which no other Hessian reads), and ``"shared"`` if that is still short.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from dllm_calib import (
    ExpertPolicy,
    Feed,
    HessianStats,
    LogRow,
    MethodContext,
    RoutedHessianCollector,
    TokenWeighting,
    collect,
)
from dllm_kernels import QuantSpec
from torch import Tensor

from dllm_weightquant._checks import check_weight
from dllm_weightquant.hessian import layer_objective
from dllm_weightquant.multibinary import MultiBinaryWeight
from dllm_weightquant.qlinear import QuantLinear, replace_linear
from dllm_weightquant.qweight import QuantizedWeight
from dllm_weightquant.rtn import rtn_quantize

__all__ = ["QuantizerFn", "quantize_linears", "relative_weight_error"]

QuantizerFn = Callable[[Tensor, Tensor | None, QuantSpec, Any], QuantizedWeight | MultiBinaryWeight]
"""``fn(weight [out, in], hessian [in, in] | None, spec, config)`` -> the quantized weight."""


def relative_weight_error(weight: Tensor, dequantized: Tensor) -> float:
    """``|W - Q|_F^2 / |W|_F^2`` in float64."""
    w = weight.detach().double()
    return float((w - dequantized.to(w)).pow(2).sum() / w.pow(2).sum().clamp_min(1e-30))


def _rtn(weight: Tensor, hessian: Tensor | None, spec: QuantSpec, config: Any) -> QuantizedWeight:
    """Plain round to nearest, whatever the step's quantizer (the ``"rtn"`` starved-expert policy)."""
    return rtn_quantize(weight, None, spec)  # type: ignore[return-value]


def _units(context: MethodContext, with_data: bool) -> Iterator[tuple[int, Feed | None]]:
    if with_data:
        yield from context.feeds()
    else:
        for index in context.blocks:
            yield index, None


class _ExpertHessians:
    """The Hessians of one group's routed expert linears, with the policy for starved ones; the pooled
    Hessian of each part (gate, up, down) is summed once, on first use."""

    def __init__(
        self,
        holders: dict[str, str],
        routed: set[str],
        hessians: dict[str, HessianStats],
        policy: ExpertPolicy,
        reserve: dict[str, HessianStats],
    ) -> None:
        self.holders, self.routed, self.hessians, self.policy = holders, routed, hessians, policy
        self.reserve = reserve
        self._pools: dict[str, Tensor | None] = {}

    def _pooled(self, part: str) -> Tensor | None:
        if part not in self._pools:
            names = [self.holders[r] for r in sorted(self.routed) if r.rsplit(".", 1)[1] == part]
            parts = [self.hessians[n] for n in names if n in self.hessians]
            mass = sum(p.mass for p in parts)
            self._pools[part] = sum(p.sum for p in parts) / mass if mass > 0 else None  # type: ignore[operator]
        return self._pools[part]

    def choose(self, role: str, in_features: int) -> tuple[Tensor | None, str | None]:
        """(the Hessian to use, None) when ``role`` saw enough tokens, else the policy's substitute and its
        label (a None Hessian means round to nearest)."""
        own = self.hessians.get(self.holders[role])
        need = self.policy.threshold(in_features)
        if own is not None and own.tokens >= need:
            return own.hessian(), None
        if self.policy.starved == "rtn":
            return None, "starved:rtn"
        extra = self.reserve.get(self.holders[role])
        if self.policy.starved == "targeted" and extra is not None:
            merged = extra if own is None else HessianStats.merge([own, extra])
            if merged.tokens >= need:
                return merged.hessian(), f"starved:targeted(+{extra.tokens})"
        pooled = self._pooled(role.rsplit(".", 1)[1])
        fallback = "starved:shared" if self.policy.starved == "shared" else "starved:targeted->shared"
        return (None, "starved:rtn(empty pool)") if pooled is None else (pooled, fallback)


def quantize_linears(
    context: MethodContext,
    config: Any,
    *,
    method: str,
    fn: QuantizerFn,
    weighting: TokenWeighting | None = None,
    needs_hessian: bool = True,
) -> list[LogRow]:
    """Quantize the non-ignored block linears of ``context`` with ``fn`` (see the module docstring).

    Args:
        context: the unit (one block in the layer-wise pipeline).
        config: ``fn``'s config.
        method: the method name for the log rows.
        fn: the quantizer.
        weighting: the token weighting of the Hessian (None: uniform).
        needs_hessian: collect Hessians (False: ``fn`` gets None, no calibration data is read).

    Returns:
        one `LogRow` per quantized linear: the layer objective ``tr((W - Q) H (W - Q)^T)`` (NaN without a
        Hessian), ``|W - Q|^2 / |W|^2`` and the seconds spent.
    """
    spec = context.weight_spec
    model = context.dlm.model
    rows: list[LogRow] = []
    for index, feed in _units(context, needs_hessian):
        block = context.dlm.topology.block(index)
        groups = block.input_groups() if context.true_sequential else (block.linear_roles(),)
        for roles in groups:
            chosen = [r for r in roles if block.names[r] not in context.ignored]
            if not chosen:
                continue
            holders = {r: block.weight_holder(r) for r in chosen}
            routed = {r for r in chosen if r in block.routes}
            hessians: dict[str, HessianStats] = {}
            reserve: dict[str, HessianStats] = {}
            if feed is not None:
                routes = {holders[r]: block.routes[r] for r in routed}
                collector = RoutedHessianCollector(routes, weighting, reserve_from=context.reserve_from)
                hessians = collect(feed, list(holders.values()), [collector])["hessian"]
                reserve = collector.reserve_results()
            experts = (
                _ExpertHessians(holders, routed, hessians, context.expert_policy, reserve) if routed else None
            )
            for role in chosen:
                start = time.perf_counter()
                name = holders[role]
                linear = model.get_submodule(name)
                weight = check_weight(linear.weight, f"{name}.weight")
                stats = hessians.get(name)
                label, quantizer, h = method, fn, None
                if feed is not None and experts is not None and role in routed:
                    h, starved = experts.choose(role, weight.shape[1])
                    if starved is not None:
                        label = f"{method}({starved})" if h is not None else "rtn(starved)"
                        quantizer = fn if h is not None else _rtn
                elif stats is not None:
                    h = stats.hessian()
                h = None if h is None else h.to(weight.device)
                quantized = quantizer(weight, h, spec, config)
                dense = quantized.dequantize().to(weight.device)
                loss = math.nan if h is None else layer_objective(weight, dense, h)
                replace_linear(model, name, QuantLinear.from_linear(linear, quantized, mode="fake"))
                rows.append(
                    LogRow(
                        index,
                        block.names[role],
                        label,
                        loss=loss,
                        rel_weight_error=relative_weight_error(weight, dense),
                        seconds=time.perf_counter() - start,
                        tokens=-1 if feed is None else (0 if stats is None else stats.tokens),
                    )
                )
    return rows
