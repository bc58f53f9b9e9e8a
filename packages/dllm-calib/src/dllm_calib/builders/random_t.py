"""The ``random`` builder: LLaDA's pre-training forward process on text windows.

Each window gets its own time ``t ~ U(0, 1)`` and every token is masked independently with probability
``p_mask = (1 - eps) * t + eps`` (``dllm_sampler.forward_noise``); ``state.t`` records ``p_mask``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from dllm_sampler import forward_noise

from dllm_calib.builders.base import BuilderConfig, register_builder
from dllm_calib.builders.windows import check_window_fields, read_windows
from dllm_calib.model_io import TextModel, describe_model, require_mask_token
from dllm_calib.sources import TextSource
from dllm_calib.state import CalibrationSet, CalibrationState, Provenance

__all__ = ["RandomConfig", "build_random"]


@register_builder
@dataclass(frozen=True)
class RandomConfig(BuilderConfig):
    """Random-time masking.

    Attributes:
        num_samples: number of windows (one state each).
        seq_len: tokens per window.
        seed: seed of the window offsets, the times and the masks.
        eps: floor of the masking probability (LLaDA: 1e-3), in [0, 1).
    """

    name: ClassVar[str] = "random"
    num_samples: int = 128
    seq_len: int = 256
    seed: int = 0
    eps: float = 1e-3

    def __post_init__(self) -> None:
        check_window_fields(self)
        if not (isinstance(self.eps, int | float) and 0.0 <= self.eps < 1.0):
            raise ValueError(f"RandomConfig.eps must be in [0, 1), got {self.eps!r}")

    def build(self, model: TextModel, source: TextSource | str | Path) -> CalibrationSet:
        return build_random(self, model, source)


def build_random(config: RandomConfig, model: TextModel, source: TextSource | str | Path) -> CalibrationSet:
    """One masked state per window; all positions are maskable."""
    mask_id = require_mask_token(model, config.name)
    windows, src, generator = read_windows(config, model, source, mask_id)
    times = torch.rand(config.num_samples, generator=generator, dtype=torch.float64)
    states = []
    for i, window in enumerate(windows):
        noisy, masked, p_mask = forward_noise(
            window[None], float(times[i]), mask_id, eps=config.eps, generator=generator
        )
        states.append(
            CalibrationState(
                input_ids=noisy[0],
                attention_mask=torch.ones(config.seq_len, dtype=torch.bool),
                is_masked=masked[0],
                mask_ratio=float(masked.float().mean()),
                t=min(1.0, float(p_mask)),
                source_index=i,
            )
        )
    prov = Provenance(
        builder=config.name,
        params=config.to_dict(),
        seed=config.seed,
        model=describe_model(model),
        source=src,
    )
    return CalibrationSet(tuple(states), prov, mask_id)
