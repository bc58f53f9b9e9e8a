"""``LLaDA2MoeConfig``: the config.json keys of inclusionAI's LLaDA2.x checkpoints (``model_type
"llada2_moe"``, architecture ``LLaDA2MoeModelLM``), e.g. LLaDA2.0-mini and LLaDA2.0-flash.

The defaults are LLaDA2.0-mini's published values (20 layers, hidden 2048, 16 query / 4 key-value heads of
128, 256 routed experts of width 512, top-8 in 4 of 8 groups, one shared expert, the first layer dense,
q/k RMSNorm, RoPE on half of each head). The published config.json holds no mask id; the reference
generate() and SGLang use 156895, which is this class's ``mask_token_id`` default (eos 156892). Keys a
config.json omits take these defaults (not the reference config class's, which are no released model's);
`to_dict` writes every key.

Routing keys, as the reference code and SGLang's loader read them:

- ``score_function``: ``"sigmoid"`` (with ``moe_router_enable_expert_bias``: the bias shifts the scores used
  to pick experts, not the weights) or ``"softmax"`` (no bias; SGLang's pairing).
- ``n_group`` / ``topk_group``: experts form ``n_group`` equal groups, a group scores the sum of its two
  best (biased) scores (the max for softmax scoring), and only the ``topk_group`` best groups compete.
- ``norm_topk_prob``: the chosen weights are divided by their sum (when ``num_experts_per_tok > 1``),
  then multiplied by ``routed_scaling_factor``.
- ``num_shared_experts``: null or 0 for none; otherwise one always-on MLP of width
  ``moe_intermediate_size * num_shared_experts`` (``moe_shared_expert_intermediate_size`` replaces
  ``moe_intermediate_size`` there when given).
- ``first_k_dense_replace``: the first k layers have a dense MLP of width ``intermediate_size``.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dllm_sampler.config import ConfigError, ModelConfig, ModelDims, _positive, _unsupported

__all__ = ["LLaDA2MoeConfig", "MoEDims"]


@dataclass(frozen=True)
class MoEDims:
    """The LLaDA2-specific shape beyond `ModelDims`.

    ``rope_dim``: leading channels of each head that RoPE rotates (``int(head_dim * partial_rotary_factor)``).
    ``moe_layers``: indices of the layers with a routed MLP (the others are dense).
    ``shared_intermediate_size``: width of the shared-expert MLP, 0 without one.
    """

    rope_dim: int
    qk_norm: bool
    o_bias: bool
    num_experts: int
    top_k: int
    n_group: int
    topk_group: int
    expert_intermediate_size: int
    shared_intermediate_size: int
    score_function: str
    expert_bias: bool
    norm_topk_prob: bool
    routed_scaling_factor: float
    moe_layers: tuple[int, ...]


@dataclass
class LLaDA2MoeConfig(ModelConfig):
    """LLaDA2 MoE config.json; defaults are LLaDA2.0-mini's (see the module docstring)."""

    ARCHITECTURES: ClassVar[tuple[str, ...]] = ("LLaDA2MoeModelLM",)
    MODEL_TYPE: ClassVar[str] = "llada2_moe"
    LAYER_COUNT_KEY: ClassVar[str] = "num_hidden_layers"
    MAX_POSITIONS_KEY: ClassVar[str] = "max_position_embeddings"
    VOCAB_KEYS: ClassVar[tuple[str, ...]] = ("vocab_size",)
    PUBLISHED_NAME: ClassVar[str] = "llada2.0-mini"
    TINY_SHAPES: ClassVar[Mapping[str, Any]] = types.MappingProxyType(
        {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "intermediate_size": 64,
            "moe_intermediate_size": 16,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "n_group": 2,
            "topk_group": 1,
            "num_shared_experts": 1,
            "first_k_dense_replace": 0,
            "max_position_embeddings": 256,
        }
    )

    hidden_size: int = 2048
    num_hidden_layers: int = 20
    num_attention_heads: int = 16
    num_key_value_heads: int = 4
    head_dim: int | None = 128
    intermediate_size: int = 5120
    moe_intermediate_size: int = 512
    moe_shared_expert_intermediate_size: int | None = None
    num_experts: int | None = 256
    num_experts_per_tok: int = 8
    n_group: int = 8
    topk_group: int = 4
    num_shared_experts: int | None = 1
    first_k_dense_replace: int = 1
    routed_scaling_factor: float = 2.5
    score_function: str = "sigmoid"
    moe_router_enable_expert_bias: bool = True
    norm_topk_prob: bool = True
    router_dtype: str | None = "fp32"
    vocab_size: int = 157184
    rms_norm_eps: float = 1e-6
    rope_theta: float = 600000.0
    partial_rotary_factor: float = 0.5
    rope_scaling: dict[str, Any] | None = None
    use_qk_norm: bool = True
    use_qkv_bias: bool = False
    use_bias: bool = False
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    mask_token_id: int = 156895
    eos_token_id: int = 156892
    pad_token_id: int = 156892
    bos_token_id: int | None = None
    use_sliding_window: bool = False
    model_type: str = "llada2_moe"
    architectures: list[str] = field(default_factory=lambda: ["LLaDA2MoeModelLM"])
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._check_identity(self.architectures, self.model_type)
        _positive(self, "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
        _positive(self, "head_dim", "intermediate_size", "moe_intermediate_size", "num_experts")
        _positive(self, "num_experts_per_tok", "n_group", "topk_group", "vocab_size", "rms_norm_eps")
        _positive(self, "rope_theta", "max_position_embeddings", "moe_shared_expert_intermediate_size")
        _unsupported(self, "hidden_act", self.hidden_act, ("silu",), "the MLPs gate by SiLU")
        _unsupported(self, "rope_scaling", self.rope_scaling, (None,), "plain RoPE only")
        _unsupported(self, "use_sliding_window", self.use_sliding_window, (False,), "attention is global")
        _unsupported(self, "score_function", self.score_function, ("sigmoid", "softmax"), "router scoring")
        _unsupported(self, "router_dtype", self.router_dtype, (None, "fp32"), "the router runs in float32")
        name = type(self).__name__
        if self.score_function == "softmax" and self.moe_router_enable_expert_bias:
            raise ConfigError(
                f"{name}: score_function='softmax' with moe_router_enable_expert_bias=true is not supported "
                "(SGLang pairs softmax with no bias and sigmoid with a bias); set one of them accordingly"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"{name}: num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.num_shared_experts is not None and self.num_shared_experts < 0:
            raise ConfigError(
                f"{name}: num_shared_experts must be >= 0 or null, got {self.num_shared_experts}"
            )
        if not 0 <= self.first_k_dense_replace <= self.num_hidden_layers:
            raise ConfigError(
                f"{name}: first_k_dense_replace={self.first_k_dense_replace} must lie in "
                f"[0, num_hidden_layers={self.num_hidden_layers}]"
            )
        if self.num_experts is not None:
            if self.num_experts % self.n_group:
                raise ConfigError(
                    f"{name}: num_experts={self.num_experts} is not divisible by n_group={self.n_group}"
                )
            per_group = self.num_experts // self.n_group
            if self.score_function == "sigmoid" and per_group < 2:
                raise ConfigError(
                    f"{name}: sigmoid routing scores a group by its two best experts, so each of the "
                    f"n_group={self.n_group} groups needs >= 2 experts (num_experts={self.num_experts}); "
                    "lower n_group"
                )
            if self.topk_group > self.n_group:
                raise ConfigError(f"{name}: topk_group={self.topk_group} exceeds n_group={self.n_group}")
            if self.num_experts_per_tok > self.topk_group * per_group:
                raise ConfigError(
                    f"{name}: num_experts_per_tok={self.num_experts_per_tok} exceeds the experts of the "
                    f"topk_group={self.topk_group} selected groups ({self.topk_group * per_group})"
                )
        if not 0 < self.partial_rotary_factor <= 1:
            raise ConfigError(
                f"{name}: partial_rotary_factor must lie in (0, 1], got {self.partial_rotary_factor}"
            )
        if self.moe().rope_dim % 2:
            raise ConfigError(
                f"{name}: RoPE needs an even rotary width, got head_dim * partial_rotary_factor = "
                f"{self.moe().rope_dim}"
            )
        d = self.dims()
        for key in ("mask_token_id", "eos_token_id", "pad_token_id", "bos_token_id"):
            value = getattr(self, key)
            if value is not None and not 0 <= value < d.vocab_size:
                raise ConfigError(f"{name}: {key}={value} is outside the vocabulary [0, {d.vocab_size})")
        if self.pad_token_id == self.mask_token_id:
            raise ConfigError(f"{name}: pad_token_id equals mask_token_id ({self.mask_token_id})")

    def to_dict(self) -> dict[str, Any]:
        """The config.json content with every known key spelled out, None ones included: the reference
        config class has other defaults (e.g. ``num_shared_experts`` 0, ``num_experts`` 16), so an omitted
        key would change the model another loader builds."""
        out = super().to_dict()
        for f in dataclasses.fields(self):
            if f.name != "extra" and f.name not in out:
                out[f.name] = getattr(self, f.name)
        return out

    def dims(self) -> ModelDims:
        """The common shape description; ``intermediate_size`` is the dense layers' MLP width."""
        return ModelDims(
            hidden_size=self.hidden_size,
            num_layers=self.num_hidden_layers,
            num_heads=self.num_attention_heads,
            num_kv_heads=self.num_key_value_heads,
            head_dim=self.head_dim or self.hidden_size // self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            vocab_size=self.vocab_size,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            qkv_bias=self.use_qkv_bias,
            tie_embeddings=self.tie_word_embeddings,
        )

    def moe(self) -> MoEDims:
        """The attention extras and the routing/expert shape (see `MoEDims`)."""
        head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        shared = self.num_shared_experts or 0
        width = self.moe_shared_expert_intermediate_size or self.moe_intermediate_size
        first_moe = self.num_hidden_layers if self.num_experts is None else self.first_k_dense_replace
        return MoEDims(
            rope_dim=int(head_dim * self.partial_rotary_factor),
            qk_norm=self.use_qk_norm,
            o_bias=self.use_bias,
            num_experts=self.num_experts or 0,
            top_k=self.num_experts_per_tok,
            n_group=self.n_group,
            topk_group=self.topk_group,
            expert_intermediate_size=self.moe_intermediate_size,
            shared_intermediate_size=width * shared,
            score_function=self.score_function,
            expert_bias=self.moe_router_enable_expert_bias,
            norm_topk_prob=self.norm_topk_prob,
            routed_scaling_factor=self.routed_scaling_factor,
            moe_layers=tuple(range(first_moe, self.num_hidden_layers)),
        )
