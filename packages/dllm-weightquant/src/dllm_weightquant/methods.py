"""The weight methods of dllm_weightquant, registered in ``dllm_calib``'s method registry.

Imported through the ``dllmq.methods`` entry point (or directly); one `register_method` line per
method. The quantizers share one pipeline step (`dllm_weightquant.block_quantizer.quantize_linears`);
each states which Hessian it reads (CGQ: the certainty-weighted one, which needs the float model's
confidence) and which bit settings it can represent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

from dllm_calib import (
    ChannelStatsCollector,
    HessianCollector,
    LogRow,
    Method,
    MethodContext,
    Needs,
    RoutedHessianCollector,
    Stage,
    Statistic,
    TokenWeighting,
    Writes,
    register_method,
)
from dllm_kernels import QuantSpec
from dllm_sampler import LINEAR_ROLES

from dllm_weightquant.abmp import ABMPConfig, abmp_quantize, check_abmp_spec
from dllm_weightquant.awq import (
    AWQConfig,
    awq_clip_roles,
    awq_folded_roles,
    awq_hessian_roles,
    awq_readers,
    awq_step,
)
from dllm_weightquant.block_quantizer import QuantizerFn, quantize_linears
from dllm_weightquant.cgq import CGQConfig, cgq_quantize
from dllm_weightquant.daq import DAQConfig, check_daq_spec, daq_quantize
from dllm_weightquant.gptq import GPTQConfig, gptq_quantize
from dllm_weightquant.rtn import RTNConfig, rtn_quantize

__all__ = ["quantizer_method"]

_ALL_WEIGHTS = Writes(weights=frozenset(LINEAR_ROLES))


Weighting = Callable[[Any], TokenWeighting | None]
"""``weighting(config)`` -> the token weighting of a quantizer's Hessian (None: uniform)."""
SpecCheck = Callable[[Any, QuantSpec, int | None], None]
"""``check(config, weight_spec, activation_bits)``: raises ``ValueError`` for a setting that cannot fit."""


def _uniform_weighting(config: Any) -> TokenWeighting | None:
    return None


def _quantizer_step(
    context: MethodContext,
    config: Any,
    *,
    name: str,
    fn: QuantizerFn,
    weighting: Weighting,
    needs_hessian: bool,
) -> list[LogRow]:
    return quantize_linears(
        context, config, method=name, fn=fn, weighting=weighting(config), needs_hessian=needs_hessian
    )


def quantizer_method(
    name: str,
    config_cls: type,
    fn: QuantizerFn,
    summary: str,
    *,
    needs_hessian: bool = True,
    weighting: Weighting = _uniform_weighting,
    needs_confidence: Callable[[Any], bool] | None = None,
    check: SpecCheck | None = None,
) -> Method:
    """A weight-quantizer `Method` running ``fn`` on every block linear (`quantize_linears`; routed experts
    included, each on its own Hessian, so ``moe=True``).

    Args:
        name: the recipe name.
        config_cls: ``fn``'s config class (a ``dllm_calib.MethodConfig`` dataclass).
        fn: ``fn(weight [out, in], hessian [in, in] | None, spec, config)``.
        summary: one line for listings.
        needs_hessian: ``fn`` reads the layer Hessian (collected on the calibration states).
        weighting: ``weighting(config)`` -> the Hessian's token weighting (None: uniform).
        needs_confidence: ``needs_confidence(config)`` -> whether the weighting reads the float model's
            per-token confidence (default: never).
        check: raises for bit settings ``fn`` cannot represent (default: the registry's, which accepts
            every setting).
    """

    def needs(config: Any) -> Needs:
        if not needs_hessian:
            return Needs()
        return Needs(
            statistics=(Statistic(RoutedHessianCollector, LINEAR_ROLES),),
            confidence=bool(needs_confidence and needs_confidence(config)),
        )

    method = Method(
        name=name,
        stage=Stage.QUANTIZER,
        config_cls=config_cls,
        apply=partial(_quantizer_step, name=name, fn=fn, weighting=weighting, needs_hessian=needs_hessian),
        summary=summary,
        needs=needs,
        writes=lambda config: _ALL_WEIGHTS,
        moe=True,
    )
    return method if check is None else dataclasses.replace(method, check=check)


def _check_daq(config: DAQConfig, weight_spec: QuantSpec, activation_bits: int | None) -> None:
    check_daq_spec(weight_spec)


def _check_abmp(config: ABMPConfig, weight_spec: QuantSpec, activation_bits: int | None) -> None:
    check_abmp_spec(weight_spec)


def _awq_needs(config: AWQConfig) -> Needs:
    """Mean |x| of the readers; Hessians of the readers ("linear" loss) and of the clipped linears."""
    hessian_roles = awq_hessian_roles(config)
    statistics = (Statistic(ChannelStatsCollector, awq_readers(config)),)
    if hessian_roles:
        statistics = (Statistic(HessianCollector, hessian_roles), *statistics)
    return Needs(statistics=statistics, plain=awq_folded_roles(config))


def _awq_writes(config: AWQConfig) -> Writes:
    """The folds' producers and consumers, and the clipped linears."""
    return Writes(weights=awq_folded_roles(config) | frozenset(awq_clip_roles(config)))


def _check_awq(config: AWQConfig, weight_spec: QuantSpec, activation_bits: int | None) -> None:
    if config.clip and weight_spec.granularity == "tensor":
        raise ValueError(
            "awq: clip searches per (row, input group) bounds, which granularity 'tensor' cannot separate; "
            "use granularity 'group' or 'channel', or set clip: false"
        )


register_method(
    quantizer_method(
        "rtn", RTNConfig, rtn_quantize, "round to nearest (optional MSE clip)", needs_hessian=False
    )
)
register_method(quantizer_method("gptq", GPTQConfig, gptq_quantize, "GPTQ on the plain layer Hessian"))
register_method(
    quantizer_method(
        "cgq",
        CGQConfig,
        cgq_quantize,
        "DLLMQuant's CGQ: GPTQ on the certainty-weighted Hessian",
        weighting=CGQConfig.weighting,
        needs_confidence=lambda config: config.confidence_exponent is not None,
    )
)
register_method(
    quantizer_method(
        "daq", DAQConfig, daq_quantize, "Quant-dLLM's multi-binary DAQ (DOR + RSR)", check=_check_daq
    )
)
register_method(
    quantizer_method(
        "abmp", ABMPConfig, abmp_quantize, "Quant-dLLM's ABMP mixed precision over DAQ", check=_check_abmp
    )
)
register_method(
    Method(
        name="awq",
        stage=Stage.BLOCK_TRANSFORM,
        config_cls=AWQConfig,
        apply=awq_step,
        summary="AWQ scales searched per block on the quantized prefix, folded into the weights",
        needs=_awq_needs,
        writes=_awq_writes,
        check=_check_awq,
    )
)
