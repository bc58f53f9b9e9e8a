"""The ``mcs`` builder: Quant-dLLM's Masked Calibration Simulation (docs/references.md#mcs).

For a window ``x`` of length ``L`` the first ``P = floor(gamma * L)`` tokens stay visible; every later token
stays visible with probability ``alpha(t)`` and is masked otherwise. The timestep grid has ``T`` points
``k = 0 .. T - 1`` with visibility ``alpha_k = schedule(k / T)`` (linear: ``s``; cosine:
``1 - cos(pi * s / 2)``), so ``k = 0`` masks the whole suffix; the fully visible endpoint ``k = T``
(``alpha = 1``) is excluded unless ``include_fully_visible`` (the reproduction's "mcs_no_full_visible"
default worked better). ``assignment="replicate"`` puts every window at every timestep (``N * T`` states,
window-major, as the reproduction does); ``"cycle"`` gives window ``i`` the single timestep ``i mod T``.
``state.t`` is the masking probability ``1 - alpha_k``; ``state.step`` the timestep index ``k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
from dllm_sampler import forward_noise

from dllm_calib.builders.base import BuilderConfig, check_int, register_builder
from dllm_calib.builders.windows import check_window_fields, read_windows
from dllm_calib.model_io import TextModel, describe_model, require_mask_token
from dllm_calib.sources import TextSource
from dllm_calib.state import CalibrationSet, CalibrationState, Provenance

__all__ = ["MCSConfig", "build_mcs", "mcs_visibility"]


@register_builder
@dataclass(frozen=True)
class MCSConfig(BuilderConfig):
    """Masked Calibration Simulation.

    Attributes:
        num_samples: number of base windows.
        seq_len: tokens per window.
        seed: seed of the window offsets and the masks.
        gamma: visible prefix ratio, in [0, 1).
        num_timesteps: ``T``, points of the visibility grid.
        schedule: ``"linear"`` or ``"cosine"`` visibility ``alpha(s)``, ``s = k / T``.
        include_fully_visible: also emit the ``alpha = 1`` endpoint (``T + 1`` grid points).
        assignment: ``"replicate"`` (every window at every timestep) or ``"cycle"`` (one timestep each).
    """

    name: ClassVar[str] = "mcs"
    num_samples: int = 128
    seq_len: int = 256
    seed: int = 0
    gamma: float = 0.25
    num_timesteps: int = 20
    schedule: Literal["linear", "cosine"] = "linear"
    include_fully_visible: bool = False
    assignment: Literal["replicate", "cycle"] = "replicate"

    def __post_init__(self) -> None:
        check_window_fields(self)
        check_int(self, "num_timesteps", 1)
        if not (isinstance(self.gamma, int | float) and 0.0 <= self.gamma < 1.0):
            raise ValueError(f"MCSConfig.gamma (visible prefix ratio) must be in [0, 1), got {self.gamma!r}")
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"MCSConfig.schedule must be 'linear' or 'cosine', got {self.schedule!r}")
        if self.assignment not in ("replicate", "cycle"):
            raise ValueError(f"MCSConfig.assignment must be 'replicate' or 'cycle', got {self.assignment!r}")

    def build(self, model: TextModel, source: TextSource | str | Path) -> CalibrationSet:
        return build_mcs(self, model, source)

    @property
    def prefix_length(self) -> int:
        """``P = floor(gamma * seq_len)`` always-visible positions."""
        return math.floor(self.gamma * self.seq_len)


def mcs_visibility(config: MCSConfig) -> list[float]:
    """The visibility ``alpha_k`` of each grid point ``k`` (length ``T``, or ``T + 1`` with the endpoint)."""
    count = config.num_timesteps + (1 if config.include_fully_visible else 0)
    out = []
    for k in range(count):
        s = k / config.num_timesteps
        if k == config.num_timesteps:
            out.append(1.0)  # exact endpoint (cos(pi / 2) is not exactly 0 in floating point)
        else:
            out.append(s if config.schedule == "linear" else 1.0 - math.cos(math.pi * s / 2.0))
    return out


def build_mcs(config: MCSConfig, model: TextModel, source: TextSource | str | Path) -> CalibrationSet:
    """Masked states per `MCSConfig`; the maskable positions are those after the prefix."""
    mask_id = require_mask_token(model, config.name)
    windows, src, generator = read_windows(config, model, source, mask_id)
    alphas = mcs_visibility(config)
    prefix = torch.zeros(config.seq_len, dtype=torch.bool)
    prefix[: config.prefix_length] = True
    states = []
    for i, window in enumerate(windows):
        grid = range(len(alphas)) if config.assignment == "replicate" else [i % len(alphas)]
        for k in grid:
            p_mask = 1.0 - alphas[k]
            noisy, masked, _ = forward_noise(
                window[None], p_mask, mask_id, prompt_mask=prefix, eps=0.0, generator=generator
            )
            states.append(
                CalibrationState(
                    input_ids=noisy[0],
                    attention_mask=torch.ones(config.seq_len, dtype=torch.bool),
                    is_masked=masked[0],
                    mask_ratio=float(masked[0, config.prefix_length :].float().mean()),
                    t=p_mask,
                    step=k,
                    source_index=i,
                )
            )
    prov = Provenance(
        builder=config.name,
        params={**config.to_dict(), "prefix_length": config.prefix_length, "visibility": alphas},
        seed=config.seed,
        model=describe_model(model),
        source=src,
    )
    return CalibrationSet(tuple(states), prov, mask_id)
