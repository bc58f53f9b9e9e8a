"""Shared front end of the window builders (plain, random, MCS): text -> fixed-length token windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dllm_calib.builders.base import check_int
from dllm_calib.model_io import TextModel, draw_windows, token_stream
from dllm_calib.sources import TextSource, text_source

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

    Texts are encoded and concatenated (EOS-separated) until ``num_samples * seq_len`` tokens are
    collected or the source ends; window starts are uniform over the stream, drawn from a generator seeded
    with ``config.seed``. The same generator is returned for the builder's own random draws.

    Returns:
        ``(windows [num_samples, seq_len] int64, source description, generator)``.

    Raises:
        ValueError: empty source, too few tokens, or text that encodes to the mask token.
    """
    src = text_source(source)
    tokens, texts_read = token_stream(model, src, config.num_samples * config.seq_len)
    if mask_token_id is not None and mask_token_id in tokens:
        raise ValueError(
            f"the source text encodes to the mask token id {mask_token_id} (the literal mask token appears "
            "in "
            "the text); remove it, calibration windows must start clean"
        )
    generator = torch.Generator().manual_seed(config.seed)
    windows = draw_windows(tokens, config.num_samples, config.seq_len, generator)
    return windows, {**src.describe(), "texts_read": texts_read, "tokens_read": len(tokens)}, generator
