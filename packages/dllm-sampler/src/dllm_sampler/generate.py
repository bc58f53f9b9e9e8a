"""One entry point for both samplers: the config runs its own sampler; without a config, ``model.arch``'s
default sampler config (`ArchSpec.default_generation`) is used."""

from __future__ import annotations

from typing import Any

import torch

from .generate_block import BlockDiffusionConfig
from .generate_dream import DreamGenerationConfig
from .generate_llada import LLaDAGenerationConfig
from .models.spec import ARCH_SPECS, arch_spec
from .step import MaskPredictor, StepHook

__all__ = ["GenerationConfig", "default_generation_config", "generate"]

GenerationConfig = LLaDAGenerationConfig | DreamGenerationConfig | BlockDiffusionConfig
"""A sampler's config; its type selects the sampler."""

_CONFIG_TYPES = tuple(spec.generation_config_cls for spec in ARCH_SPECS.values())


def default_generation_config(arch: str) -> GenerationConfig:
    """The default sampler config of an arch (`ArchSpec.default_generation`): `LLaDAGenerationConfig()`
    or `DreamGenerationConfig()`.

    Raises:
        ValueError: unknown ``arch`` (the message names the known ones).
    """
    return arch_spec(arch).default_generation()


def generate(
    model: MaskPredictor,
    prompt_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    config: GenerationConfig | None = None,
    on_step: StepHook | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Generate with the sampler of ``config`` (``config.sample``; ``model.arch``'s default when None).

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
    if not isinstance(config, _CONFIG_TYPES):
        names = " or ".join(cls.__name__ for cls in _CONFIG_TYPES)
        raise TypeError(f"config must be a {names}, got {type(config).__name__}")
    return config.sample(model, prompt_ids, attention_mask, on_step=on_step, **kwargs)
