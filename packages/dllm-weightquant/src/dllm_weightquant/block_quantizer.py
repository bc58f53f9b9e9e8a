"""The weight-quantizer step shared by every quantizer: quantize a unit's block linears in place.

`quantize_linears` runs one quantizer function, ``fn(weight [out, in], hessian [in, in] | None, spec,
config)``, on every block linear of a `MethodContext` that the recipe does not ignore, and puts a
``QuantLinear`` (fake mode: the dequantized weight, the fastest way to propagate through the block on
any device) in place of the layer that held the weight (through run-time wrappers such as an online
rotation, so the quantizer sees the rotated inputs it will be multiplied with).

Quantizers that read the layer Hessian collect it with ``dllm_calib.HessianCollector`` (under the
quantizer's token weighting, e.g. CGQ's certainty weights) on the unit's feed. With
``context.true_sequential`` they quantize group by group (q/k/v, o, gate/up, down: the linears reading
one activation), each group's Hessians collected after the earlier groups were quantized; otherwise all
seven from one pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from dllm_calib import Feed, HessianCollector, LogRow, MethodContext, TokenWeighting, collect
from dllm_kernels import QuantSpec
from dllm_sampler import INPUT_GROUPS, LINEAR_ROLES
from torch import Tensor

from dllm_weightquant._checks import check_weight
from dllm_weightquant.hessian import layer_objective
from dllm_weightquant.multibinary import MultiBinaryWeight
from dllm_weightquant.qlinear import QuantLinear, replace_linear
from dllm_weightquant.qweight import QuantizedWeight

__all__ = ["QuantizerFn", "quantize_linears", "relative_weight_error"]

QuantizerFn = Callable[[Tensor, Tensor | None, QuantSpec, Any], QuantizedWeight | MultiBinaryWeight]
"""``fn(weight [out, in], hessian [in, in] | None, spec, config)`` -> the quantized weight."""


def relative_weight_error(weight: Tensor, dequantized: Tensor) -> float:
    """``|W - Q|_F^2 / |W|_F^2`` in float64."""
    w = weight.detach().double()
    return float((w - dequantized.to(w)).pow(2).sum() / w.pow(2).sum().clamp_min(1e-30))


def _units(context: MethodContext, with_data: bool) -> Iterator[tuple[int, Feed | None]]:
    if with_data:
        yield from context.feeds()
    else:
        for index in context.blocks:
            yield index, None


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
    groups = INPUT_GROUPS if context.true_sequential else (LINEAR_ROLES,)
    rows: list[LogRow] = []
    for index, feed in _units(context, needs_hessian):
        block = context.dlm.topology.block(index)
        for roles in groups:
            chosen = [r for r in roles if block.names[r] not in context.ignored]
            if not chosen:
                continue
            holders = {r: block.weight_holder(r) for r in chosen}
            hessians: dict[str, Any] = {}
            if feed is not None:
                hessians = collect(feed, list(holders.values()), [HessianCollector(weighting)])["hessian"]
            for role in chosen:
                start = time.perf_counter()
                name = holders[role]
                linear = model.get_submodule(name)
                weight = check_weight(linear.weight, f"{name}.weight")
                h = hessians[name].hessian().to(weight.device) if feed is not None else None
                quantized = fn(weight, h, spec, config)
                dense = quantized.dequantize().to(weight.device)
                loss = math.nan if h is None else layer_objective(weight, dense, h)
                replace_linear(model, name, QuantLinear.from_linear(linear, quantized, mode="fake"))
                rows.append(
                    LogRow(
                        index,
                        block.names[role],
                        method,
                        loss=loss,
                        rel_weight_error=relative_weight_error(weight, dense),
                        seconds=time.perf_counter() - start,
                    )
                )
    return rows
