"""The activation-side methods of dllm_actquant, registered in ``dllm_calib``'s method registry.

Imported through the ``dllmq.methods`` entry point (or directly); one `register_method` line per
method, each with its pipeline step:

* ``quarot``, ``smoothquant``, ``duquant``: whole-model equivalence transforms (stage ``global``); the
  last two read the float model's inputs of every block's q, o, gate and down (the four distinct block
  inputs), collected block by block on the calibration feed;
* ``iaaq``: DLLMQuant's attention-weighted search of the V quantizer (stage ``act_calibration``), attached
  once the block's weights are quantized;
* ``act_quant``: dynamic per-token activation quantization of the block linears (stage ``activations``),
  at the scheme's activation width; a scheme with quantized activations implies it;
* ``attn_quant``: dynamic quantization of the attention's Q and K (after RoPE) and V (stage
  ``activations``), at the scheme's attention width; a scheme with quantized attention (``W4A4``, not
  ``W4A4KV16``) implies it with all three sites.
"""

from __future__ import annotations

import time
from typing import Any

from dllm_calib import (
    AttentionCollector,
    BindContext,
    InputSampleCollector,
    InputSamples,
    LogRow,
    Method,
    MethodContext,
    Needs,
    Stage,
    Statistic,
    Writes,
    collect,
    register_method,
)
from dllm_sampler import LINEAR_ROLES, DiffusionLM

from dllm_actquant.act_quant import ActQuantConfig
from dllm_actquant.apply import quantize_activations
from dllm_actquant.attention import AttnQuantConfig, attach_attention_quantizers
from dllm_actquant.duquant import DUQUANT_SITES, DuQuantConfig, apply_duquant
from dllm_actquant.iaaq import IAAQConfig, VOutputCollector, calibrate_iaaq
from dllm_actquant.quarot import QuaRotConfig, apply_quarot, check_quarot_sizes, quarot_wrapped_roles
from dllm_actquant.smoothquant import SmoothQuantConfig, apply_smoothquant
from dllm_actquant.vquant import attach_v_quantizers

__all__ = ["DUQUANT_SAMPLE_TOKENS", "READER_ROLES", "float_block_inputs"]

READER_ROLES = ("q", "o", "gate", "down")
"""One linear per distinct block input (q/k/v and gate/up share theirs)."""

DUQUANT_SAMPLE_TOKENS = 2048
"""Activation rows per site DuQuant builds its rotations from."""

_ALL = frozenset(LINEAR_ROLES)


def float_block_inputs(
    context: MethodContext, roles: tuple[str, ...], max_tokens: int
) -> dict[str, InputSamples]:
    """`InputSamples` (at most ``max_tokens`` rows, and the exact absmax) of the ``roles`` linears' inputs
    of every block of ``context``, keyed by topology name; block ``i``'s rows are drawn with seed ``i``."""
    out: dict[str, InputSamples] = {}
    for index, feed in context.feeds():
        block = context.dlm.topology.block(index)
        names = [block.names[r] for r in roles]
        out |= collect(feed, names, [InputSampleCollector(max_tokens, seed=index)])["inputs"]
    return out


def _whole_model_row(method: str, start: float) -> list[LogRow]:
    return [LogRow(block=-1, module="*", method=method, seconds=time.perf_counter() - start)]


def _quarot_step(context: MethodContext, config: QuaRotConfig) -> list[LogRow]:
    start = time.perf_counter()
    apply_quarot(context.dlm, config)
    return _whole_model_row("quarot", start)


def _smoothquant_step(context: MethodContext, config: SmoothQuantConfig) -> list[LogRow]:
    start = time.perf_counter()
    stats = float_block_inputs(context, READER_ROLES, 1)
    apply_smoothquant(context.dlm, {n: s.absmax for n, s in stats.items()}, config)
    return _whole_model_row("smoothquant", start)


def _duquant_step(context: MethodContext, config: DuQuantConfig) -> list[LogRow]:
    start = time.perf_counter()
    stats = float_block_inputs(context, READER_ROLES, DUQUANT_SAMPLE_TOKENS)
    samples = {n: s.samples for n, s in stats.items()}
    apply_duquant(context.dlm, samples, config, act_absmax={n: s.absmax for n, s in stats.items()})
    return _whole_model_row("duquant", start)


def _iaaq_step(context: MethodContext, config: IAAQConfig) -> list[LogRow]:
    """Search each block's V quantizer on its feed; attach it when the block's other steps are done."""
    rows: list[LogRow] = []
    for index, feed in context.feeds():
        block = context.dlm.topology.block(index)
        if block.names["v"] in context.ignored:
            continue
        start = time.perf_counter()
        result = calibrate_iaaq(context.dlm, feed, config, blocks=[index])[index]
        loss = float(result.losses.min(dim=0).values.sum())
        rows.append(LogRow(index, block.names["v"], "iaaq", loss=loss, seconds=time.perf_counter() - start))
        context.defer(
            lambda dlm=context.dlm, i=index, p=result.params: attach_v_quantizers(dlm, config.vquant, {i: p})
        )
    return rows


def _act_quant_step(context: MethodContext, config: ActQuantConfig) -> list[LogRow]:
    rows: list[LogRow] = []
    for index in context.blocks:
        block = context.dlm.topology.block(index)
        roles = [r for r in block.linear_roles() if block.names[r] not in context.ignored]
        if not roles:
            continue
        start = time.perf_counter()
        names = quantize_activations(context.dlm, config, mode="fake", roles=roles, blocks=[index])
        seconds = (time.perf_counter() - start) / len(names)
        rows += [LogRow(index, name, f"act_quant(a{config.bits})", seconds=seconds) for name in names]
    return rows


def _attn_quant_step(context: MethodContext, config: AttnQuantConfig) -> list[LogRow]:
    rows: list[LogRow] = []
    for index in context.blocks:
        start = time.perf_counter()
        names = attach_attention_quantizers(context.dlm, config, blocks=[index])
        seconds = (time.perf_counter() - start) / max(len(names), 1)
        label = f"attn_quant({'/'.join(config.sites)} a{config.bits})"
        rows += [LogRow(index, name, label, seconds=seconds) for name in names]
    return rows


def _bind_attn_quant(params: dict[str, Any], context: BindContext) -> AttnQuantConfig:
    if "bits" in params:
        raise ValueError(
            "attn_quant takes its bits from the scheme (W4A4 quantizes Q/K/V to 4 bits, W4A4KV8 to 8, "
            "W4A4KV16 keeps them in float); remove 'bits'"
        )
    return AttnQuantConfig.from_dict({**params, "bits": context.attention_bits or 8})


def _bind_act_quant(params: dict[str, Any], context: BindContext) -> ActQuantConfig:
    allowed = {"symmetric", "clip_ratio"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"unknown parameters {unknown}; act_quant takes {sorted(allowed)} (its bits come from the "
            "scheme, e.g. W4A8, and it is always dynamic per token)"
        )
    return ActQuantConfig(bits=context.activation_bits or 8, granularity="token", **params)


def _bind_iaaq(params: dict[str, Any], context: BindContext) -> IAAQConfig:
    params = dict(params)
    vquant = dict(params.pop("vquant", None) or {})
    vquant.setdefault("bits", context.activation_bits or 8)
    return IAAQConfig.from_dict({**params, "vquant": vquant})


def _check_quarot_model(config: QuaRotConfig, dlm: DiffusionLM) -> None:
    check_quarot_sizes(dlm.topology, config)


_FLOAT_INPUTS = (Statistic(InputSampleCollector, READER_ROLES),)

register_method(
    Method(
        name="quarot",
        stage=Stage.GLOBAL,
        config_cls=QuaRotConfig,
        apply=_quarot_step,
        summary="QuaRot: Hadamard rotations of the residual (R1), values (R2), q/k (R3), o/down inputs (R4)",
        needs=lambda config: Needs(plain=_ALL),
        writes=lambda config: Writes(weights=_ALL, wraps=quarot_wrapped_roles(config)),
        check_model=_check_quarot_model,
    )
)
register_method(
    Method(
        name="smoothquant",
        stage=Stage.GLOBAL,
        config_cls=SmoothQuantConfig,
        apply=_smoothquant_step,
        summary="SmoothQuant: per-channel scales move activation outliers into the weights",
        needs=lambda config: Needs(statistics=_FLOAT_INPUTS, plain=_ALL),
        writes=lambda config: Writes(weights=_ALL),
    )
)
register_method(
    Method(
        name="duquant",
        stage=Stage.GLOBAL,
        config_cls=DuQuantConfig,
        apply=_duquant_step,
        summary="DuQuant: smoothing, block rotations and a zigzag permutation, rotated online",
        needs=lambda config: Needs(statistics=_FLOAT_INPUTS, plain=_ALL),
        writes=lambda config: Writes(
            weights=_ALL, wraps=frozenset(r for s in config.sites for r in DUQUANT_SITES[s])
        ),
    )
)
register_method(
    Method(
        name="iaaq",
        stage=Stage.ACT_CALIBRATION,
        config_cls=IAAQConfig,
        apply=_iaaq_step,
        summary="DLLMQuant's IA-AQ: V quantizer searched against the attention-weighted error",
        needs=lambda config: Needs(
            statistics=(
                Statistic(VOutputCollector, ("v",), "output"),
                *((Statistic(AttentionCollector, ("q", "k"), "output"),) if config.weighted else ()),
            )
        ),
        writes=lambda config: Writes(wraps=frozenset({"v"})),
        bind=_bind_iaaq,
        activation_only=True,
    )
)
register_method(
    Method(
        name="attn_quant",
        stage=Stage.ACTIVATIONS,
        config_cls=AttnQuantConfig,
        apply=_attn_quant_step,
        summary="dynamic quantization of the attention's Q, K (after RoPE) and V at the attention width",
        writes=lambda config: Writes(wraps=frozenset({"v"} if "v" in config.sites else ())),
        bind=_bind_attn_quant,
        attention_only=True,
        scheme_default=True,
    )
)
register_method(
    Method(
        name="act_quant",
        stage=Stage.ACTIVATIONS,
        config_cls=ActQuantConfig,
        apply=_act_quant_step,
        summary="dynamic per-token activation quantization at the scheme's activation width",
        writes=lambda config: Writes(wraps=_ALL),
        bind=_bind_act_quant,
        activation_only=True,
        scheme_default=True,
        moe=True,
    )
)
