"""The per-block steps: AWQ, IA-AQ, the weight quantizer (stage by stage) and activation quantization.

Every step sees block ``index`` on the accelerator and its inputs as propagated through the already
quantized blocks before it (`BlockFeed`). Statistics are collected with ``dllm_calib.collect`` on the
module that holds each weight (``dllm_actquant.linear_targets``: ``<name>.inner`` inside an online
rotation), so a quantizer after QuaRot or DuQuant sees the rotated inputs it will be multiplied with.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from dllm_actquant import (
    ActQuantConfig,
    IAAQConfig,
    VQuantParams,
    calibrate_iaaq,
    linear_targets,
    quantize_activations,
)
from dllm_calib import CalibrationSet, ChannelStatsCollector, Collector, HessianCollector, collect
from dllm_kernels import QuantSpec
from dllm_sampler import BlockTopology, DiffusionLM
from dllm_weightquant import (
    AWQConfig,
    CGQConfig,
    QuantLinear,
    apply_awq,
    get_method,
    layer_objective,
    replace_linear,
)
from torch import Tensor

from dllm_bench.pipeline.blocks import BlockRunner
from dllm_bench.pipeline.feed import BlockFeed, HiddenCache
from dllm_bench.pipeline.log import LogRow
from dllm_bench.pipeline.targets import LINEAR_ROLES, STAGE_ROLES

__all__ = ["BlockContext", "run_act_quant", "run_awq", "run_iaaq", "run_quantizer"]

_AWQ_READER = {"attn": "q", "vo": "o", "mlp": "gate", "down": "down"}


@dataclass
class BlockContext:
    """What a step needs to know about the block being quantized.

    Attributes:
        dlm: the model (its block ``index`` is on ``runner.device``).
        runner: runs single blocks.
        cset: the calibration set (None when the recipe needs no statistics).
        cache: the block's inputs per calibration batch.
        index: the block index.
        spec: the weight format of every quantized linear.
        ignored: topology names of the linears left in floating point.
        batch_size: states per forward pass.
    """

    dlm: DiffusionLM
    runner: BlockRunner
    cset: CalibrationSet | None
    cache: HiddenCache | None
    index: int
    spec: QuantSpec
    ignored: set[str]
    batch_size: int

    @property
    def block(self) -> BlockTopology:
        return self.dlm.topology.block(self.index)

    def feed(self) -> BlockFeed:
        """The model seen as this block on its cached inputs."""
        if self.cache is None or self.cset is None:
            raise ValueError("this step needs calibration statistics, but the run has no calibration set")
        return BlockFeed(self.dlm, self.runner, self.index, self.cache)

    def collect(self, targets: list[str], collectors: list[Collector]) -> dict[str, Any]:
        """``dllm_calib.collect`` of this block's ``targets`` (module names) on its cached inputs."""
        feed = self.feed()
        assert self.cset is not None
        return collect(feed, self.cset, targets, collectors, self.batch_size)

    def target(self, role: str) -> str:
        """The module name holding the weight of ``role`` (through online rotations)."""
        return linear_targets(self.dlm)[self.block.names[role]]


def run_awq(ctx: BlockContext, config: AWQConfig) -> list[LogRow]:
    """Search and fold AWQ scales of this block on its (quantized-prefix) inputs."""
    start = time.perf_counter()
    readers = {g: ctx.block.names[_AWQ_READER[g]] for g in config.groups}
    stats = ctx.collect(
        list(dict.fromkeys(readers.values())), [HessianCollector(), ChannelStatsCollector(name="channels")]
    )
    hessians = {n: s.hessian() for n, s in stats["hessian"].items()}
    means = {n: s.mean_abs for n, s in stats["channels"].items()}
    found = apply_awq(ctx.dlm.topology, hessians, means, ctx.spec, config, blocks=[ctx.index])
    seconds = (time.perf_counter() - start) / max(len(found), 1)
    return [
        LogRow(ctx.index, readers[key.split(".", 1)[1]], "awq", loss=scale.error, seconds=seconds)
        for key, scale in found.items()
    ]


def run_iaaq(ctx: BlockContext, config: IAAQConfig) -> tuple[VQuantParams, LogRow]:
    """IA-AQ's search of this block's V quantizer; returns its parameters (attach them later)."""
    start = time.perf_counter()
    result = calibrate_iaaq(ctx.feed(), ctx.cset, config, blocks=[ctx.index], batch_size=ctx.batch_size)[
        ctx.index
    ]
    loss = float(result.losses.min(dim=0).values.sum())
    row = LogRow(ctx.index, ctx.block.names["v"], "iaaq", loss=loss, seconds=time.perf_counter() - start)
    return result.params, row


def _rel_error(weight: Tensor, dequantized: Tensor) -> float:
    w = weight.detach().double()
    return float((w - dequantized.to(w)).pow(2).sum() / w.pow(2).sum().clamp_min(1e-30))


def run_quantizer(ctx: BlockContext, method: str, config: Any, true_sequential: bool) -> list[LogRow]:
    """Quantize this block's linears (except ignored ones) and put ``QuantLinear`` modules in their place
    (fake mode: the dequantized weight, the fastest way to propagate through the block on any device).

    Hessian-based methods quantize stage by stage (q/k/v, o, gate/up, down) with ``true_sequential``, each
    stage's Hessians collected after the earlier stages were quantized; else from one pass.
    """
    registered = get_method(method)
    stages = STAGE_ROLES if true_sequential else (LINEAR_ROLES,)
    weighting = config.weighting() if isinstance(config, CGQConfig) else None
    rows: list[LogRow] = []
    for roles in stages:
        chosen = [r for r in roles if ctx.block.names[r] not in ctx.ignored]
        if not chosen:
            continue
        targets = {r: ctx.target(r) for r in chosen}
        hessians: dict[str, Any] = {}
        if registered.needs_hessian:
            hessians = ctx.collect(list(targets.values()), [HessianCollector(weighting)])["hessian"]
        for role in chosen:
            start = time.perf_counter()
            name = targets[role]
            linear = ctx.dlm.model.get_submodule(name)
            weight = linear.weight.detach()
            h = hessians[name].hessian().to(weight.device) if registered.needs_hessian else None
            quantized = registered.fn(weight, h, ctx.spec, config)
            dense = quantized.dequantize().to(weight.device)
            loss = math.nan if h is None else layer_objective(weight, dense, h)
            replace_linear(ctx.dlm.model, name, QuantLinear.from_linear(linear, quantized, mode="fake"))
            rows.append(
                LogRow(
                    ctx.index,
                    ctx.block.names[role],
                    method,
                    loss=loss,
                    rel_weight_error=_rel_error(weight, dense),
                    seconds=time.perf_counter() - start,
                )
            )
    return rows


def run_act_quant(ctx: BlockContext, config: ActQuantConfig) -> list[LogRow]:
    """Wrap this block's (non-ignored) linears in dynamic per-token activation quantizers (fake mode)."""
    start = time.perf_counter()
    roles = [r for r in LINEAR_ROLES if ctx.block.names[r] not in ctx.ignored]
    if not roles:
        return []
    names = quantize_activations(ctx.dlm, config, mode="fake", roles=roles, blocks=[ctx.index])
    seconds = (time.perf_counter() - start) / len(names)
    return [LogRow(ctx.index, name, f"act_quant(a{config.bits})", seconds=seconds) for name in names]
