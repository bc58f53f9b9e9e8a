"""Whole-model transforms run before the block loop: QuaRot, SmoothQuant, DuQuant.

They act across blocks (QuaRot rotates the residual stream shared by all blocks) or, as in their papers,
are computed once from the float model's activations (SmoothQuant, DuQuant). Their statistics come from a
float pass that runs the calibration set through the blocks one at a time (`BlockFeed`), so no more than
one block is on the accelerator; the transforms then edit the CPU copy of the model.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from dllm_actquant import CapturedInputs, apply_duquant, apply_quarot, apply_smoothquant, capture_inputs
from dllm_calib import CalibrationSet
from dllm_sampler import DiffusionLM

from dllm_bench.pipeline.blocks import BlockRunner, offloaded
from dllm_bench.pipeline.feed import BlockFeed, HiddenCache
from dllm_bench.pipeline.log import LogRow
from dllm_bench.recipes import Step

__all__ = ["DUQUANT_SAMPLE_TOKENS", "apply_global_step", "float_inputs"]

DUQUANT_SAMPLE_TOKENS = 2048
"""Activation rows per site DuQuant builds its rotations from."""

_READERS = ("q", "o", "gate", "down")
"""One linear per distinct block input (q/k/v and gate/up share theirs)."""


def float_inputs(
    dlm: DiffusionLM, runner: BlockRunner, cset: CalibrationSet, batch_size: int, max_tokens: int
) -> CapturedInputs:
    """Inputs of every block's q, o, gate and down on the float model: exact absmax and up to
    ``max_tokens`` sampled rows each, keyed by topology name."""
    cache = HiddenCache.embed(runner, cset, batch_size)
    samples: dict[str, torch.Tensor] = {}
    absmax: dict[str, torch.Tensor] = {}
    blocks = list(dlm.topology)
    for block in blocks:
        with offloaded(runner.blocks[block.index], runner.device):
            feed = BlockFeed(dlm, runner, block.index, cache)
            names = [block.names[r] for r in _READERS]
            batches = cache.pairs(runner.device)
            got = capture_inputs(feed, batches, names, max_tokens=max_tokens, seed=block.index)
            samples |= got.samples
            absmax |= got.absmax
            if block.index + 1 < len(blocks):
                cache = cache.propagate(runner, block.index)
    return CapturedInputs(samples=samples, absmax=absmax)


def apply_global_step(
    step: Step,
    config: Any,
    dlm: DiffusionLM,
    runner: BlockRunner,
    cset: CalibrationSet | None,
    batch_size: int,
) -> LogRow:
    """Apply one whole-model transform in place; returns its log row (block -1)."""
    start = time.perf_counter()
    if step.method == "quarot":
        apply_quarot(dlm, config)
    else:
        if cset is None:
            raise ValueError(f"{step.method} needs calibration statistics, but no calibration set was given")
        tokens = DUQUANT_SAMPLE_TOKENS if step.method == "duquant" else 1
        stats = float_inputs(dlm, runner, cset, batch_size, tokens)
        if step.method == "smoothquant":
            apply_smoothquant(dlm, stats.absmax, config)
        else:
            apply_duquant(dlm, stats.samples, config, act_absmax=stats.absmax)
    return LogRow(block=-1, module="*", method=step.method, seconds=time.perf_counter() - start)
