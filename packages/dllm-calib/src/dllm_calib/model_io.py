"""What the builders need from a model: its tokenizer, its mask token and a name for provenance.

The window builders (plain, random, MCS) need only a `TextModel`: ``encode(text)`` returning token ids,
``mask_token_id`` (None for a model that cannot be masked) and ``eos_token_id`` (None without one).
``dllm_sampler.DiffusionLM`` is one; TMAS needs the full ``DiffusionLM`` (it runs the sampler). These
helpers turn what they find into clear errors.
"""

from __future__ import annotations

import os
from typing import Protocol

import torch
from torch import Tensor

__all__ = ["TextModel", "describe_model", "encode_text", "require_mask_token"]


class TextModel(Protocol):
    """The part of a model the window builders use (``dllm_sampler.DiffusionLM`` has it)."""

    @property
    def mask_token_id(self) -> int | None: ...

    @property
    def eos_token_id(self) -> int | None: ...

    def encode(self, text: str) -> list[int]: ...


def require_mask_token(model: TextModel, builder: str) -> int:
    """The model's mask token id.

    Raises:
        ValueError: if the model has no ``mask_token_id`` (the builder cannot mask anything).
    """
    mask_id = getattr(model, "mask_token_id", None)
    if mask_id is None:
        raise ValueError(
            f"the {builder!r} builder masks tokens, but the model has no mask_token_id; load a diffusion LM "
            "(e.g. dllm_sampler.load('tiny-llada')) or use the 'plain' builder"
        )
    if not isinstance(mask_id, int) or mask_id < 0:
        raise ValueError(f"model.mask_token_id must be a non-negative int, got {mask_id!r}")
    return mask_id


def describe_model(model: object) -> str:
    """A short model description for provenance: its name or path if it has one, else its ``repr``
    (``DiffusionLM``'s names the architecture and sizes), else its class and architecture."""
    for attr in ("name_or_path", "name", "path"):
        value = getattr(model, attr, None)
        if isinstance(value, str | os.PathLike) and str(value):
            return str(value)
    if type(model).__repr__ is not object.__repr__:
        return repr(model)
    arch = getattr(model, "arch", None)
    return f"{type(model).__name__} ({arch})" if arch else type(model).__name__


def encode_text(model: TextModel, text: str) -> list[int]:
    """Token ids of ``text`` from ``model.encode`` (a list, a 1-D tensor or an object with ``.ids``).

    Raises:
        TypeError: if the model has no ``encode``.
        ValueError: if the text encodes to no tokens.
    """
    encode = getattr(model, "encode", None)
    if encode is None:
        raise TypeError(f"{type(model).__name__} has no encode(text); builders need the model's tokenizer")
    ids = encode(text)
    ids = getattr(ids, "ids", ids)
    out = torch.as_tensor(ids).flatten().tolist() if isinstance(ids, Tensor) else [int(i) for i in ids]
    if not out:
        raise ValueError(f"text {text[:40]!r} encodes to no tokens; calibration text must be non-empty")
    return out
