"""The ``plain`` builder: fully visible text windows, the AR-style baseline ("AR-transfer" calibration)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from dllm_calib.builders.base import BuilderConfig, register_builder
from dllm_calib.builders.windows import check_window_fields, read_windows
from dllm_calib.model_io import TextModel, describe_model
from dllm_calib.sources import TextSource
from dllm_calib.state import CalibrationSet, CalibrationState, Provenance

__all__ = ["PlainConfig", "build_plain"]


@register_builder
@dataclass(frozen=True)
class PlainConfig(BuilderConfig):
    """Fully visible windows.

    Attributes:
        num_samples: number of windows (states).
        seq_len: tokens per window.
        seed: seed of the window offsets.
    """

    name: ClassVar[str] = "plain"
    num_samples: int = 128
    seq_len: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        check_window_fields(self)

    def build(self, model: TextModel, source: TextSource | str | Path) -> CalibrationSet:
        return build_plain(self, model, source)


def build_plain(config: PlainConfig, model: TextModel, source: TextSource | str | Path) -> CalibrationSet:
    """``config.num_samples`` clean windows: no masks, ``mask_ratio = t = 0``."""
    mask_id = getattr(model, "mask_token_id", None)
    windows, src, _ = read_windows(config, model, source, mask_id)
    visible = torch.ones(config.seq_len, dtype=torch.bool)
    states = tuple(
        CalibrationState(
            input_ids=w.clone(),
            attention_mask=visible.clone(),
            is_masked=torch.zeros_like(visible),
            mask_ratio=0.0,
            t=0.0,
            source_index=i,
        )
        for i, w in enumerate(windows)
    )
    prov = Provenance(
        builder=config.name,
        params=config.to_dict(),
        seed=config.seed,
        model=describe_model(model),
        source=src,
    )
    return CalibrationSet(states, prov, mask_id)
