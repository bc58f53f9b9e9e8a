"""Sampled input rows and exact per-channel absmax of chosen modules.

DuQuant builds its rotations from sample activations (a rotation changes every channel's maximum, so the
per-channel absmax alone cannot predict it); SmoothQuant needs only the absmax. For every target the
collector keeps the input rows of the real tokens (padding left out) of every batch, on the CPU, and the
running absmax; `results` then draws at most ``max_tokens`` rows uniformly at random (one generator
seeded with ``seed``, drawn target by target in the order of the targets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dllm_calib.batching import Batch
from dllm_calib.collectors.base import Collector, HookPoint

__all__ = ["InputSampleCollector", "InputSamples"]


@dataclass
class InputSamples:
    """One module's inputs: ``samples [n, C]`` (at most ``max_tokens`` real-token rows, in the model's
    dtype) and ``absmax [C]`` over every real token seen."""

    samples: Tensor
    absmax: Tensor


class InputSampleCollector(Collector):
    """Collects `InputSamples` of the targets' first inputs (see the module docstring).

    Args:
        max_tokens: rows kept per target (>= 1).
        seed: seed of the row subsampling.
        name: the results key in `collect`'s return value.
    """

    def __init__(self, max_tokens: int = 512, seed: int = 0, name: str = "inputs") -> None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
        self.max_tokens, self.seed, self.name = max_tokens, seed, name
        self.rows: dict[str, list[Tensor]] = {}
        self.absmax: dict[str, Tensor] = {}

    def hook_points(self, targets: Sequence[str]) -> list[HookPoint]:
        for name in targets:
            self.rows.setdefault(name, [])
        return [HookPoint(name, "input") for name in targets]

    def observe(self, point: HookPoint, tensor: Tensor, batch: Batch) -> None:
        flat = tensor.reshape(-1, tensor.shape[-1])[batch.attention_mask.reshape(-1)]
        amax = flat.abs().amax(0) if flat.shape[0] else flat.new_zeros(flat.shape[1])
        name = point.module
        self.absmax[name] = amax if name not in self.absmax else torch.maximum(self.absmax[name], amax)
        self.rows[name].append(flat.cpu())

    def results(self) -> dict[str, InputSamples]:
        """Target name -> `InputSamples` (raises ``RuntimeError`` for a target that never ran)."""
        gen = torch.Generator().manual_seed(self.seed)
        out: dict[str, InputSamples] = {}
        for name, parts in self.rows.items():
            if not parts:
                raise RuntimeError(f"module {name!r} did not run on the calibration batches")
            x = torch.cat(parts)
            if x.shape[0] > self.max_tokens:
                x = x[torch.randperm(x.shape[0], generator=gen)[: self.max_tokens]]
            out[name] = InputSamples(samples=x, absmax=self.absmax[name].cpu())
        return out
