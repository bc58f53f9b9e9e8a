"""Capture the inputs of chosen modules on calibration batches: token samples and exact absmax.

DuQuant builds its rotations from sample activations (a rotation changes every channel's maximum, so the
per-channel absmax alone cannot predict it); SmoothQuant needs only the absmax. Both come from here when
no ``dllm_calib`` statistics are at hand (``dllm_calib.ChannelStats`` objects are accepted wherever an
absmax is).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from dllm_sampler import DiffusionLM
from torch import Tensor, nn

__all__ = ["CapturedInputs", "capture_inputs"]

Batch = Tensor | tuple[Tensor, Tensor | None]


@dataclass
class CapturedInputs:
    """Per module name: ``samples[name]`` ``[n, C]`` (at most ``max_tokens`` random real tokens, float32 or
    float64 as the model computes) and ``absmax[name]`` ``[C]`` over every real token seen."""

    samples: dict[str, Tensor]
    absmax: dict[str, Tensor]


@torch.no_grad()
def capture_inputs(
    model: DiffusionLM | nn.Module,
    batches: Iterable[Batch],
    names: Sequence[str],
    max_tokens: int = 512,
    seed: int = 0,
) -> CapturedInputs:
    """Run ``batches`` through ``model`` and record the first input of each module in ``names``.

    Args:
        model: a ``DiffusionLM`` (its ``logits`` is called) or the model module (called as
            ``model(input_ids, attention_mask)``).
        batches: ``input_ids [B, L]`` tensors or ``(input_ids, attention_mask)`` pairs; padded tokens
            (mask 0) are left out of the statistics.
        names: qualified module names under the model module.
        max_tokens: tokens kept per module for ``samples`` (uniformly at random, seeded).
        seed: the subsampling seed.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    root = model.model if isinstance(model, DiffusionLM) else model
    run = model.logits if isinstance(model, DiffusionLM) else model
    seen: dict[str, list[Tensor]] = {n: [] for n in names}
    absmax: dict[str, Tensor] = {}
    keep: list[Tensor | None] = [None]

    def make_hook(name: str):
        def hook(_mod: nn.Module, inputs: tuple, _out: object) -> None:
            x = inputs[0].detach()
            flat = x.reshape(-1, x.shape[-1])
            if keep[0] is not None:
                flat = flat[keep[0]]
            amax = flat.abs().amax(0) if flat.shape[0] else flat.new_zeros(flat.shape[1])
            absmax[name] = amax if name not in absmax else torch.maximum(absmax[name], amax)
            seen[name].append(flat.cpu())

        return hook

    modules = dict(root.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"no modules named {missing} in the model")
    handles = [modules[n].register_forward_hook(make_hook(n)) for n in names]
    try:
        for batch in batches:
            ids, mask = (batch, None) if isinstance(batch, Tensor) else batch
            keep[0] = None if mask is None else mask.reshape(-1).to(torch.bool)
            run(ids, mask)
    finally:
        for h in handles:
            h.remove()
    gen = torch.Generator().manual_seed(seed)
    samples: dict[str, Tensor] = {}
    for name, parts in seen.items():
        if not parts:
            raise RuntimeError(f"module {name!r} did not run on the calibration batches")
        x = torch.cat(parts)
        if x.shape[0] > max_tokens:
            x = x[torch.randperm(x.shape[0], generator=gen)[:max_tokens]]
        samples[name] = x
    return CapturedInputs(samples=samples, absmax={n: a.cpu() for n, a in absmax.items()})
