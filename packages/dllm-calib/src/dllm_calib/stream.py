"""Corpus -> token stream -> calibration windows that do not overlap.

`token_stream` reads a source once and tokenizes it once:

- a finite corpus is read whole when it holds at most ``max_read_tokens`` tokens (the source's own cap, or
  `READ_FACTOR` x the tokens the windows need: 16 x 128 x 2048 = 4.2M tokens, more than WikiText-2's train
  split). A larger corpus is read as a seeded sample: a first pass counts its texts and characters without
  tokenizing, the characters per token are measured on its first `PROBE_CHARS` characters, and whole texts
  are taken in a seeded random order until about ``max_read_tokens`` tokens are expected; they are then
  tokenized in corpus order. The description says how many texts and tokens were read of how many;
- an endless generator (``source.endless``, the tiny models' arithmetic) is read until the windows' tokens
  are collected: its texts are already a seeded random draw.

Texts are separated by the model's EOS (``source.separator is None``) or joined by the separator into
chunks of about `CHUNK_CHARS` characters that are tokenized whole (WikiText-2, joined by blank lines as the
reference loaders do; a chunk boundary adds the tokenizer's special tokens once per megabyte of text).

`draw_windows` cuts ``N`` windows of ``L`` tokens. When the stream holds at least ``N x L`` tokens the
windows never overlap: the ``T - N x L`` spare tokens are split into ``N + 1`` gaps uniformly at random
(every non-overlapping placement is equally likely) and the windows are returned in a random order. A
shorter stream (at least ``L`` tokens) gives ``N`` evenly spread windows that cover it; they overlap,
reusing ``1 - T / (N x L)`` of their tokens, and a `CalibrationOverlapWarning` says so.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from dllm_calib.model_io import TextModel, encode_text
from dllm_calib.sources import TextSource

__all__ = [
    "CHUNK_CHARS",
    "PROBE_CHARS",
    "READ_FACTOR",
    "CalibrationOverlapWarning",
    "draw_windows",
    "token_stream",
]

READ_FACTOR = 16
"""Default read cap of a finite corpus, in multiples of the tokens the windows need."""
CHUNK_CHARS = 1 << 20
"""Characters per tokenizer call when texts are joined by a separator."""
PROBE_CHARS = 1 << 16
"""Characters tokenized to estimate a large corpus's characters per token."""


class CalibrationOverlapWarning(UserWarning):
    """The corpus is too small for non-overlapping windows: some tokens appear in several windows."""


def _encode(
    model: TextModel, texts: Iterable[str], separator: str | None, stop: int | None
) -> tuple[list[int], int]:
    """Tokens of ``texts`` (EOS- or ``separator``-joined) and how many texts were read; reading ends after
    ``stop`` tokens when given."""
    tokens: list[int] = []
    count = 0
    if separator is None:
        eos = getattr(model, "eos_token_id", None)
        for text in texts:
            if tokens and eos is not None:
                tokens.append(int(eos))
            tokens.extend(encode_text(model, text))
            count += 1
            if stop is not None and len(tokens) >= stop:
                break
        return tokens, count
    chunk: list[str] = []
    size = 0
    for text in texts:
        chunk.append(text)
        size += len(text)
        count += 1
        if size >= CHUNK_CHARS:
            tokens.extend(encode_text(model, separator.join(chunk) + separator))
            chunk, size = [], 0
            if stop is not None and len(tokens) >= stop:
                return tokens, count
    if chunk:
        tokens.extend(encode_text(model, separator.join(chunk)))
    return tokens, count


def _chars_per_token(model: TextModel, source: TextSource) -> float:
    """Characters per token of the first `PROBE_CHARS` characters of ``source``."""
    probe: list[str] = []
    size = 0
    for text in source.texts():
        probe.append(text[: PROBE_CHARS - size])
        size += len(probe[-1])
        if size >= PROBE_CHARS:
            break
    tokens, _ = _encode(model, probe, source.separator, None)
    return size / max(len(tokens), 1)


def _sample(lengths: Sequence[int], budget_chars: float, seed: int) -> set[int]:
    """Indices of whole texts, taken in a seeded random order until ``budget_chars`` characters."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    chosen: set[int] = set()
    total = 0
    for i in order:
        if total >= budget_chars:
            break
        chosen.add(i)
        total += lengths[i]
    return chosen


def token_stream(
    model: TextModel, source: TextSource, needed: int, seed: int = 0
) -> tuple[list[int], dict[str, Any]]:
    """Read and tokenize ``source`` for windows needing ``needed`` tokens (see the module docstring).

    Returns:
        ``(tokens, info)``: ``info`` holds ``texts_read``, ``tokens_read`` and, for a finite corpus,
        ``corpus_texts``, ``sampled`` and ``max_read_tokens``.

    Raises:
        ValueError: ``needed < 1``, a read cap below ``needed``, or a source without text.
    """
    if needed < 1:
        raise ValueError(f"needed must be >= 1 token, got {needed}")
    if source.endless:
        tokens, count = _encode(model, source.texts(), source.separator, needed)
        return tokens, {"texts_read": count, "tokens_read": len(tokens)}
    cap = source.max_read_tokens or READ_FACTOR * needed
    if cap < needed:
        raise ValueError(
            f"max_read_tokens {cap} is below the {needed} tokens the windows need; raise it or ask for fewer "
            "or shorter windows"
        )
    lengths = [len(text) for text in source.texts()]
    if not lengths:
        raise ValueError(f"text source {source.describe()} yielded no text")
    # a token spans at least a character, so a corpus of at most `cap` characters needs no estimate
    sampled = sum(lengths) > cap and sum(lengths) > (budget_chars := cap * _chars_per_token(model, source))
    if sampled:
        chosen = _sample(lengths, budget_chars, seed)
        texts: Iterable[str] = (t for i, t in enumerate(source.texts()) if i in chosen)
    else:
        texts = source.texts()
    tokens, count = _encode(model, texts, source.separator, None)
    info = {
        "texts_read": count,
        "tokens_read": len(tokens),
        "corpus_texts": len(lengths),
        "sampled": sampled,
        "max_read_tokens": cap,
    }
    return tokens, info


def draw_windows(
    tokens: Sequence[int], num_samples: int, seq_len: int, generator: torch.Generator
) -> tuple[Tensor, dict[str, Any]]:
    """``[num_samples, seq_len]`` int64 windows of ``tokens``, non-overlapping whenever the stream allows.

    Returns:
        ``(windows, info)``: ``info`` holds ``tokens_needed`` (``N x L``), ``tokens_available`` and
        ``reused_fraction`` (the share of window tokens that repeat another window's, 0 without overlap).

    Raises:
        ValueError: ``tokens`` is shorter than one window.

    Warns:
        CalibrationOverlapWarning: the stream is shorter than ``N x L`` tokens, so windows overlap.
    """
    total, needed = len(tokens), num_samples * seq_len
    if total < seq_len:
        raise ValueError(
            f"the text source gave only {total} tokens but seq_len is {seq_len}; lower seq_len or add text"
        )
    stream = torch.tensor(tokens, dtype=torch.int64)
    if total >= needed:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = random.Random(seed)
        picks = sorted(rng.sample(range(total - needed + num_samples), num_samples))
        starts = [p + i * (seq_len - 1) for i, p in enumerate(picks)]  # gaps >= 0 between windows
        rng.shuffle(starts)
        reused = 0.0
    else:
        starts = torch.linspace(0, total - seq_len, num_samples).round().long().tolist()
        reused = 1.0 - total / needed
        warnings.warn(
            f"the calibration corpus gave {total} tokens but {num_samples} windows of {seq_len} need "
            f"{needed}: windows overlap and {reused:.1%} of their tokens are reused; give a bigger corpus "
            "or fewer / shorter windows",
            CalibrationOverlapWarning,
            stacklevel=3,
        )
    windows = torch.stack([stream[s : s + seq_len] for s in starts])
    info = {"tokens_needed": needed, "tokens_available": total, "reused_fraction": round(reused, 6)}
    return windows, info
