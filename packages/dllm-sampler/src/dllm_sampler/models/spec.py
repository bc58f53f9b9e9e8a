"""Architecture specs: everything that differs between LLaDA and Dream, as data.

An ``ArchSpec`` names the config class, the model class, the logit shift, the qualified module names
the topology needs and the default sampler. Code elsewhere looks the spec up (`arch_spec`,
`spec_for_config`, `spec_for_model`) instead of branching on the architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from dllm_sampler.config import DreamConfig, LLaDAConfig, ModelConfig
from dllm_sampler.config_llada2 import LLaDA2MoeConfig
from dllm_sampler.generate_block import BlockDiffusionConfig
from dllm_sampler.generate_dream import DreamGenerationConfig
from dllm_sampler.generate_llada import LLaDAGenerationConfig
from dllm_sampler.models.dream import DreamModel
from dllm_sampler.models.llada import LLaDAModelLM
from dllm_sampler.models.llada2 import LLaDA2MoeModelLM

__all__ = [
    "ARCH_SPECS",
    "ArchSpec",
    "EvalDefaults",
    "MoETopologyNames",
    "TopologyNames",
    "arch_spec",
    "attach_experts_runners",
    "attach_shared_input_runners",
    "routed_experts",
    "shared_input_groups",
    "spec_for_config",
    "spec_for_model",
    "tiny_config",
]


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
    qk: str
    o: str
    mlp_norm: str
    gate: str
    up: str
    down: str


@dataclass(frozen=True)
class MoETopologyNames:
    """Qualified module names of a fused-QKV mixture-of-experts model (LLaDA2). Model-level names are
    absolute; block roles are relative to ``f"{blocks}.{i}."``; ``router``/``experts``/``shared_experts``
    exist in the MoE layers (``ArchSpec``'s config decides which), ``dense_*`` in the dense ones, and the
    ``expert_*`` roles are relative to ``f"{experts}.{e}."`` (and to ``shared_experts``). ``routing`` is the
    parameter-free site that sees every routing decision (`dllm_sampler.models.llada2_moe.Routing`).

    The generic `dllm_sampler.topology.Topology` (norm -> q/k/v/gate/up edits) does not apply to it."""

    embedding: str
    final_norm: str
    head: str
    blocks: str
    attn_norm: str
    qkv: str
    q_norm: str
    k_norm: str
    qk: str
    o: str
    mlp_norm: str
    dense_gate: str
    dense_up: str
    dense_down: str
    router: str
    routing: str
    experts: str
    shared_experts: str
    expert_gate: str
    expert_up: str
    expert_down: str


@dataclass(frozen=True)
class EvalDefaults:
    """The evaluation protocol of an architecture's own harness (LLaDA's ``eval_llada.py``, Dream's
    ``dream_base``), as dllm_bench's lm-eval adapter applies it.

    Attributes:
        sampler: the sampler config of ``generate_until``; its ``gen_length`` and ``steps`` are the
            protocol's.
        steps_follow_length: a ``gen_length`` given without ``steps`` also sets ``steps`` (one step per
            token, LLaDA); otherwise ``steps`` stays the protocol's (Dream's 512).
        max_length: longest context in tokens (``prefix + target`` or ``prompt + answer``).
        add_bos: prepend BOS to contexts (Dream's harness does; LLaDA's leaves it to the tokenizer).
        append_eos: append EOS to likelihood targets (Dream's harness does: its estimator never masks the
            last position, so the EOS makes every continuation token count).
        cut_at_eos: a generated answer is the ids before the first EOS (Dream); otherwise it is decoded
            whole and the special-token strings are removed from the text (LLaDA).
    """

    sampler: LLaDAGenerationConfig | DreamGenerationConfig | BlockDiffusionConfig
    steps_follow_length: bool
    max_length: int
    add_bos: bool
    append_eos: bool
    cut_at_eos: bool


@dataclass(frozen=True)
class ArchSpec:
    """One supported architecture.

    ``logit_shift`` is 1 when the model's logit at position i predicts token i + 1 (Dream, adapted from an
    autoregressive model), so the adapter shifts logits right by one; 0 for LLaDA. ``display_name`` is the
    architecture as messages spell it ("LLaDA"). ``generation_config_cls`` is the config class of the
    architecture's own sampler; its no-argument instance is the default sampler config.
    ``likelihood_estimator`` names the Monte-Carlo ELBO estimator of ``dllm_sampler.likelihood`` that the
    architecture's paper uses ("llada": stratified mask counts; "dream": stratified times).
    ``eval_defaults`` is the architecture's evaluation-harness protocol.
    """

    name: str
    display_name: str
    config_cls: type[ModelConfig]
    model_cls: type[nn.Module]
    logit_shift: int
    names: TopologyNames | MoETopologyNames
    generation_config_cls: (
        type[LLaDAGenerationConfig] | type[DreamGenerationConfig] | type[BlockDiffusionConfig]
    )
    likelihood_estimator: str
    eval_defaults: EvalDefaults

    def default_generation(self) -> LLaDAGenerationConfig | DreamGenerationConfig | BlockDiffusionConfig:
        """The default config of the architecture's sampler (``generation_config_cls()``)."""
        return self.generation_config_cls()


ARCH_SPECS: dict[str, ArchSpec] = {
    "llada": ArchSpec(
        name="llada",
        display_name="LLaDA",
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
            qk="qk_site",
            o="attn_out",
            mlp_norm="ff_norm",
            gate="ff_proj",
            up="up_proj",
            down="ff_out",
        ),
        generation_config_cls=LLaDAGenerationConfig,
        likelihood_estimator="llada",
        eval_defaults=EvalDefaults(
            sampler=LLaDAGenerationConfig(steps=1024, gen_length=1024, block_length=1024),
            steps_follow_length=True,
            max_length=4096,
            add_bos=False,
            append_eos=False,
            cut_at_eos=False,
        ),
    ),
    "dream": ArchSpec(
        name="dream",
        display_name="Dream",
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
            qk="self_attn.qk_site",
            o="self_attn.o_proj",
            mlp_norm="post_attention_layernorm",
            gate="mlp.gate_proj",
            up="mlp.up_proj",
            down="mlp.down_proj",
        ),
        generation_config_cls=DreamGenerationConfig,
        likelihood_estimator="dream",
        eval_defaults=EvalDefaults(
            sampler=DreamGenerationConfig(max_new_tokens=128, steps=512, top_p=0.95),
            steps_follow_length=False,
            max_length=2048,
            add_bos=True,
            append_eos=True,
            cut_at_eos=True,
        ),
    ),
    "llada2": ArchSpec(
        name="llada2",
        display_name="LLaDA2",
        config_cls=LLaDA2MoeConfig,
        model_cls=LLaDA2MoeModelLM,
        logit_shift=0,
        names=MoETopologyNames(
            embedding="model.word_embeddings",
            final_norm="model.norm",
            head="lm_head",
            blocks="model.layers",
            attn_norm="input_layernorm",
            qkv="attention.query_key_value",
            q_norm="attention.query_layernorm",
            k_norm="attention.key_layernorm",
            qk="attention.qk_site",
            o="attention.dense",
            mlp_norm="post_attention_layernorm",
            dense_gate="mlp.gate_proj",
            dense_up="mlp.up_proj",
            dense_down="mlp.down_proj",
            router="mlp.gate",
            routing="mlp.routing",
            experts="mlp.experts",
            shared_experts="mlp.shared_experts",
            expert_gate="gate_proj",
            expert_up="up_proj",
            expert_down="down_proj",
        ),
        generation_config_cls=BlockDiffusionConfig,
        likelihood_estimator="llada",
        eval_defaults=EvalDefaults(
            sampler=BlockDiffusionConfig(),
            steps_follow_length=False,
            max_length=4096,
            add_bos=False,
            append_eos=False,
            cut_at_eos=True,
        ),
    ),
}


def arch_spec(arch: str) -> ArchSpec:
    """The spec named ``arch`` (a key of `ARCH_SPECS`).

    Raises:
        ValueError: ``arch`` is not a known architecture (the message names the known ones).
    """
    spec = ARCH_SPECS.get(arch)
    if spec is None:
        known = ", ".join(repr(name) for name in ARCH_SPECS)
        raise ValueError(f"unknown model arch {arch!r}; known archs: {known}")
    return spec


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


def tiny_config(arch: str, **overrides: Any) -> LLaDAConfig | DreamConfig | LLaDA2MoeConfig:
    """`ModelConfig.tiny` of ``arch``'s config class ("llada", "dream" or "llada2"): hidden 32, 2 blocks, 4
    heads, MLP 64, vocab 48 with mask = 47, eos = 46, pad = 45, bos = 44. Dream and LLaDA2 get GQA with 2
    kv heads; LLaDA2 has 4 experts of width 16, top-2 in 1 of 2 groups, one shared expert.
    ``overrides`` use the architecture's own config keys (e.g. ``n_kv_heads=2`` for LLaDA).

    Raises:
        ValueError: unknown ``arch`` (the message names the known ones).
    """
    return arch_spec(arch).config_cls.tiny(**overrides)  # type: ignore[return-value]


def shared_input_groups(model: nn.Module) -> list[tuple[str, ...]]:
    """Qualified names of the linear layers of ``model`` that read the same input, from its `ArchSpec`
    names: per block q/k/v and gate/up (dense models); the dense layers' gate/up and each expert's and the
    shared expert's gate/up (mixture-of-experts models, whose q/k/v is one fused layer already). Runtimes
    that can run such a group as one GEMM attach to it (`dllm_sampler.models.layers.linears_on`)."""
    names = spec_for_model(model).names
    blocks = model.get_submodule(names.blocks)
    groups: list[tuple[str, ...]] = []
    for i, block in enumerate(blocks):
        prefix = f"{names.blocks}.{i}."
        if not isinstance(names, MoETopologyNames):
            groups += [(prefix + names.q, prefix + names.k, prefix + names.v)]
            groups += [(prefix + names.gate, prefix + names.up)]
            continue
        if _has(block, names.dense_gate):
            groups += [(prefix + names.dense_gate, prefix + names.dense_up)]
        mlps = (
            [f"{names.experts}.{e}" for e in range(len(block.get_submodule(names.experts)))]
            if _has(block, names.experts)
            else []
        )
        if _has(block, names.shared_experts):
            mlps += [names.shared_experts]
        groups += [(f"{prefix}{m}.{names.expert_gate}", f"{prefix}{m}.{names.expert_up}") for m in mlps]
    return groups


def attach_shared_input_runners(model: nn.Module, runner: Callable[[tuple[nn.Module, ...]], Any]) -> int:
    """For each group of `shared_input_groups`, ``runner(layers)`` and set the result as the first layer's
    ``shared_input_gemm`` (`dllm_sampler.models.layers.linears_on` calls it); a ``ValueError`` from
    ``runner`` means the group does not qualify and leaves it alone. Returns how many groups got a runner."""
    attached = 0
    for group in shared_input_groups(model):
        layers = tuple(model.get_submodule(name) for name in group)
        try:
            made = runner(layers)
        except ValueError:
            continue
        layers[0].shared_input_gemm = made
        attached += 1
    return attached


def routed_experts(model: nn.Module) -> list[tuple[str, tuple[tuple[str, str, str], ...]]]:
    """The routed experts of each mixture-of-experts layer of ``model``, from its `ArchSpec` names: per layer
    the qualified name of its experts' ``ModuleList`` and, per expert, the names of its gate, up and down
    linears relative to that list (``"0.gate_proj"``). Empty for dense models."""
    names = spec_for_model(model).names
    if not isinstance(names, MoETopologyNames):
        return []
    layers = []
    for i, block in enumerate(model.get_submodule(names.blocks)):
        if not _has(block, names.experts):
            continue
        count = len(block.get_submodule(names.experts))
        roles = (names.expert_gate, names.expert_up, names.expert_down)
        per_expert = tuple(tuple(f"{e}.{r}" for r in roles) for e in range(count))
        layers.append((f"{names.blocks}.{i}.{names.experts}", per_expert))
    return layers


def attach_experts_runners(
    model: nn.Module, runner: Callable[[nn.ModuleList, tuple[tuple[str, str, str], ...]], Any]
) -> int:
    """For each layer of `routed_experts`, ``runner(experts, roles)`` (``roles``: per expert the names of its
    gate, up and down linears relative to the list) and set the result as the experts list's
    ``experts_gemm`` (`dllm_sampler.models.layers.experts_on` calls it); a ``ValueError`` from ``runner``
    leaves that layer alone. Returns how many layers got a runner."""
    attached = 0
    for path, roles in routed_experts(model):
        experts = model.get_submodule(path)
        try:
            made = runner(experts, roles)
        except ValueError:
            continue
        experts.experts_gemm = made
        attached += 1
    return attached


def _has(module: nn.Module, name: str) -> bool:
    try:
        return module.get_submodule(name) is not None
    except AttributeError:
        return False
