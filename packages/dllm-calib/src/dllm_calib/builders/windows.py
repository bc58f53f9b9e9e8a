"""Shared front end of the window builders (plain, random, MCS): text -> fixed-length token windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dllm_calib.builders.base import check_int
from dllm_calib.model_io import TextModel
from dllm_calib.sources import TextSource, text_source
from dllm_calib.stream import draw_windows, token_stream

__all__ = ["check_window_fields", "read_windows"]


def check_window_fields(config: Any) -> None:
    """Validate the ``num_samples``, ``seq_len`` and ``seed`` fields every window builder has."""
    check_int(config, "num_samples", 1)
    check_int(config, "seq_len", 2)
    check_int(config, "seed", 0)


def read_windows(
    config: Any, model: TextModel, source: TextSource | str | Path, mask_token_id: int | None
) -> tuple[Tensor, dict[str, Any], torch.Generator]:
    """Read the source and cut ``config.num_samples`` windows of ``config.seq_len`` tokens.

    The source is read and tokenized once (a finite corpus whole, or a seeded sample of a huge one; an
    endless generator until the windows' tokens are collected: ``dllm_calib.stream.token_stream``) and the
    windows are cut without overlap whenever the stream holds ``num_samples * seq_len`` tokens
    (``dllm_calib.stream.draw_windows``, which warns with the reused share otherwise), from a generator
    seeded with ``config.seed``. The same generator is returned for the builder's own random draws.

    Returns:
        ``(windows [num_samples, seq_len] int64, source description with what was read and reused,
        generator)``.

    Raises:
        ValueError: empty source, too few tokens, or text that encodes to the mask token.
    """
    src = text_source(source)
    tokens, read = token_stream(model, src, config.num_samples * config.seq_len, seed=config.seed)
    if mask_token_id is not None and mask_token_id in tokens:
        raise ValueError(
            f"the source text encodes to the mask token id {mask_token_id} (the literal mask token appears "
            "in "
            "the text); remove it, calibration windows must start clean"
        )
    generator = torch.Generator().manual_seed(config.seed)
    windows, drawn = draw_windows(tokens, config.num_samples, config.seq_len, generator)
    return windows, {**src.describe(), **read, **drawn}, generator
