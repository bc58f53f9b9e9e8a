"""Architecture specs: everything that differs between LLaDA and Dream, as data.

An ``ArchSpec`` names the config class, the model class, the logit shift and the qualified module names
the topology needs. Code elsewhere looks the spec up instead of branching on the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from dllm_sampler.config import DreamConfig, LLaDAConfig, ModelConfig
from dllm_sampler.models.dream import DreamModel
from dllm_sampler.models.llada import LLaDAModelLM

__all__ = ["ARCH_SPECS", "ArchSpec", "TopologyNames", "spec_for_config", "spec_for_model"]


@dataclass(frozen=True)
class TopologyNames:
    """Qualified module names. Model-level names are absolute; block roles are relative to
    ``f"{blocks}.{i}."``. ``head`` is the untied LM head (absent from the model when tied)."""

    embedding: str
    final_norm: str
    head: str
    blocks: str
    attn_norm: str
    q: str
    k: str
    v: str
    o: str
    mlp_norm: str
    gate: str
    up: str
    down: str


@dataclass(frozen=True)
class ArchSpec:
    """One supported architecture.

    ``logit_shift`` is 1 when the model's logit at position i predicts token i + 1 (Dream, adapted from an
    autoregressive model), so the adapter shifts logits right by one; 0 for LLaDA.
    """

    name: str
    config_cls: type[ModelConfig]
    model_cls: type[nn.Module]
    logit_shift: int
    names: TopologyNames


ARCH_SPECS: dict[str, ArchSpec] = {
    "llada": ArchSpec(
        name="llada",
        config_cls=LLaDAConfig,
        model_cls=LLaDAModelLM,
        logit_shift=0,
        names=TopologyNames(
            embedding="model.transformer.wte",
            final_norm="model.transformer.ln_f",
            head="model.transformer.ff_out",
            blocks="model.transformer.blocks",
            attn_norm="attn_norm",
            q="q_proj",
            k="k_proj",
            v="v_proj",
            o="attn_out",
            mlp_norm="ff_norm",
            gate="ff_proj",
            up="up_proj",
            down="ff_out",
        ),
    ),
    "dream": ArchSpec(
        name="dream",
        config_cls=DreamConfig,
        model_cls=DreamModel,
        logit_shift=1,
        names=TopologyNames(
            embedding="model.embed_tokens",
            final_norm="model.norm",
            head="lm_head",
            blocks="model.layers",
            attn_norm="input_layernorm",
            q="self_attn.q_proj",
            k="self_attn.k_proj",
            v="self_attn.v_proj",
            o="self_attn.o_proj",
            mlp_norm="post_attention_layernorm",
            gate="mlp.gate_proj",
            up="mlp.up_proj",
            down="mlp.down_proj",
        ),
    ),
}


def spec_for_config(config: object) -> ArchSpec:
    """The spec whose config class ``config`` is an instance of."""
    for spec in ARCH_SPECS.values():
        if isinstance(config, spec.config_cls):
            return spec
    raise TypeError(
        f"no architecture for config type {type(config).__name__}; supported: "
        f"{[s.config_cls.__name__ for s in ARCH_SPECS.values()]}"
    )


def spec_for_model(model: nn.Module) -> ArchSpec:
    """The spec whose model class ``model`` is an instance of."""
    for spec in ARCH_SPECS.values():
        if isinstance(model, spec.model_cls):
            return spec
    raise TypeError(
        f"no architecture for model type {type(model).__name__}; supported: "
        f"{[s.model_cls.__name__ for s in ARCH_SPECS.values()]}"
    )
