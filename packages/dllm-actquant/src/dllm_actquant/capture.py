"""Capture the inputs of chosen modules on token batches: sampled rows and the exact per-channel absmax.

DuQuant builds its rotations from sample activations; SmoothQuant needs only the absmax. `capture_inputs`
runs a model on token batches you already have with ``dllm_calib.InputSampleCollector``; on a calibration
`Feed` call ``dllm_calib.collect`` with that collector directly (``dllm_calib.ChannelStats`` objects are
accepted wherever an absmax is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dllm_calib import InputSampleCollector, TokenFeed, collect
from dllm_sampler import DiffusionLM
from torch import Tensor

__all__ = ["CapturedInputs", "capture_inputs"]

Batch = Tensor | tuple[Tensor, Tensor | None]


@dataclass
class CapturedInputs:
    """Per module name: ``samples[name]`` ``[n, C]`` (at most ``max_tokens`` random real tokens, in the
    model's dtype) and ``absmax[name]`` ``[C]`` over every real token seen."""

    samples: dict[str, Tensor]
    absmax: dict[str, Tensor]


def capture_inputs(
    dlm: DiffusionLM, batches: Sequence[Batch], names: Sequence[str], max_tokens: int = 512, seed: int = 0
) -> CapturedInputs:
    """Run ``batches`` through ``dlm`` and record the first input of each Linear in ``names``.

    Args:
        dlm: the model.
        batches: ``input_ids [B, L]`` tensors or ``(input_ids, attention_mask)`` pairs; padded tokens
            (mask 0) are left out of the statistics.
        names: qualified Linear names under ``dlm.model``.
        max_tokens: tokens kept per module for ``samples`` (uniformly at random, seeded).
        seed: the subsampling seed.
    """
    got = collect(TokenFeed(dlm, batches), names, [InputSampleCollector(max_tokens, seed)])["inputs"]
    return CapturedInputs(
        samples={n: s.samples for n, s in got.items()}, absmax={n: s.absmax for n, s in got.items()}
    )
