"""One entry point for both samplers: dispatch on the config type, or on ``model.arch`` without a config."""

from __future__ import annotations

from typing import Any

import torch

from .generate_dream import DreamGenerationConfig, generate_dream
from .generate_llada import LLaDAGenerationConfig, generate_llada
from .step import MaskPredictor, StepHook

__all__ = ["GenerationConfig", "default_generation_config", "generate"]

GenerationConfig = LLaDAGenerationConfig | DreamGenerationConfig
"""Either sampler's config; its type selects the sampler."""


def default_generation_config(arch: str) -> GenerationConfig:
    """The default sampler config of an arch: `LLaDAGenerationConfig()` or `DreamGenerationConfig()`."""
    if arch == "llada":
        return LLaDAGenerationConfig()
    if arch == "dream":
        return DreamGenerationConfig()
    raise ValueError(f"unknown model arch {arch!r}: pass a LLaDAGenerationConfig or DreamGenerationConfig")


def generate(
    model: MaskPredictor,
    prompt_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    config: GenerationConfig | None = None,
    on_step: StepHook | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Generate with the sampler chosen by ``config``'s type (``model.arch``'s default when None).

    Either sampler runs on any `MaskPredictor`; e.g. a `DreamGenerationConfig` on a LLaDA model is allowed.

    Args:
        model: a `MaskPredictor`.
        prompt_ids: ``[B, Lp]`` token ids (left-padded for ragged batches).
        attention_mask: ``[B, Lp]`` or None.
        config: a `LLaDAGenerationConfig` or `DreamGenerationConfig`, or None.
        on_step: hook called with a `StepState` after every step.
        **kwargs: ``generator``, ``progress``, ``with_logits`` (see `generate_llada` / `generate_dream`).

    Returns:
        ``[B, Lp + new tokens]`` long.
    """
    if config is None:
        config = default_generation_config(model.arch)
    if isinstance(config, LLaDAGenerationConfig):
        return generate_llada(model, prompt_ids, attention_mask, config, on_step=on_step, **kwargs)
    if isinstance(config, DreamGenerationConfig):
        return generate_dream(model, prompt_ids, attention_mask, config, on_step=on_step, **kwargs)
    raise TypeError(
        f"config must be a LLaDAGenerationConfig or DreamGenerationConfig, got {type(config).__name__}"
    )
