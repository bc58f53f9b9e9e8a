"""Model configurations with the real Hugging Face ``config.json`` keys of LLaDA and Dream.

``LLaDAConfig`` mirrors ``GSAI-ML/LLaDA-8B-*`` (``model_type "llada"``, OLMo-style keys) and
``DreamConfig`` mirrors ``Dream-org/Dream-v0-*-7B`` (``model_type "Dream"``, Qwen2 keys). The defaults are
the 8B/7B checkpoint values, so ``LLaDAConfig()`` describes LLaDA-8B.

``from_dict`` type-checks the known keys, validates them (options the model code does not implement, such
as ``alibi: true``, raise ``ConfigError`` naming the key) and keeps every unknown key in ``extra`` so that
``to_dict`` writes it back unchanged. Both classes reduce to a common ``ModelDims`` that the model code and
the topology use.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

__all__ = [
    "ConfigError",
    "DreamConfig",
    "LLaDAConfig",
    "ModelConfig",
    "ModelDims",
    "config_from_dict",
]


class ConfigError(ValueError):
    """A config.json that is malformed or asks for an option this package does not implement."""


@dataclass(frozen=True)
class ModelDims:
    """Architecture-independent shape of a LLaDA/Dream transformer.

    ``vocab_size`` is the number of logits (rows of the embedding and of the head); ``head_dim`` is the
    per-head width, so q has ``num_heads * head_dim`` and k/v have ``num_kv_heads * head_dim`` channels.
    """

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    qkv_bias: bool
    tie_embeddings: bool

    @property
    def gqa_groups(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.num_heads // self.num_kv_heads


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a JSON value matches a (simple) type hint; ints are accepted where floats are expected."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


class ModelConfig:
    """Shared ``from_dict``/``to_dict`` machinery of the config dataclasses (not instantiated itself)."""

    ARCHITECTURES: ClassVar[tuple[str, ...]]
    MODEL_TYPE: ClassVar[str]
    ABSENT_MEANS_NONE: ClassVar[tuple[str, ...]] = ()  # keys whose absence from a file means None
    LAYER_COUNT_KEY: ClassVar[str]
    """The key of the number of transformer blocks."""
    MAX_POSITIONS_KEY: ClassVar[str]
    """The key of the longest sequence (tokens) the model's positions are meant for."""
    VOCAB_KEYS: ClassVar[tuple[str, ...]]
    """The keys that size the embedding and the head; a model with an ``n``-token vocabulary sets all to n."""
    PUBLISHED_NAME: ClassVar[str]
    """Short name of the released checkpoint whose config `published` returns (e.g. ``"llada-8b"``)."""
    PUBLISHED_KEYS: ClassVar[Mapping[str, Any]] = types.MappingProxyType({})
    """Keys the released config.json spells out where the class defaults leave them implicit."""
    TINY_SHAPES: ClassVar[Mapping[str, Any]]
    """`tiny`'s shape keys: hidden 32, 2 blocks, 4 heads, MLP 64, 256 positions."""
    extra: dict[str, Any]

    @classmethod
    def published(cls) -> Self:
        """The released checkpoint's config (`PUBLISHED_NAME`): the class defaults plus `PUBLISHED_KEYS`."""
        return cls(**cls.PUBLISHED_KEYS)

    @classmethod
    def tiny(cls, **overrides: Any) -> Self:
        """A small random-test config: `TINY_SHAPES`, vocab 48 with mask = 47, eos = 46, pad = 45, bos = 44
        (the top four ids of an overridden ``vocab_size``). ``overrides`` use this class's keys (e.g.
        ``n_kv_heads=2`` for LLaDA)."""
        v = overrides.get("vocab_size", 48)
        ids = {"mask_token_id": v - 1, "eos_token_id": v - 2, "pad_token_id": v - 3, "bos_token_id": v - 4}
        return cls(**{**cls.TINY_SHAPES, "vocab_size": v, **ids, **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build and validate a config from a parsed config.json; unknown keys are kept in ``extra``."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a JSON object (dict), got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        for key in known & data.keys():
            value = data[key]
            if not _type_ok(value, hints[key]):
                raise ConfigError(
                    f"{cls.__name__}: key {key!r} has value {value!r} of type {type(value).__name__}, "
                    f"expected {hints[key]}"
                )
            kwargs[key] = float(value) if hints[key] is float else copy.deepcopy(value)
        for key in cls.ABSENT_MEANS_NONE:
            kwargs.setdefault(key, None)
        extra = {k: copy.deepcopy(v) for k, v in data.items() if k not in known}
        config = cls(**kwargs, extra=extra)
        config._source_keys = frozenset(data)
        return config

    def to_dict(self) -> dict[str, Any]:
        """The config.json content: every known key (None-valued ones only if they were read) + extras."""
        source = getattr(self, "_source_keys", frozenset())
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.name not in source:
                continue
            out[f.name] = copy.deepcopy(value)
        out.update(copy.deepcopy(self.extra))
        return out

    def _check_identity(self, architectures: list[str], model_type: str) -> None:
        if model_type != self.MODEL_TYPE or (
            architectures and not set(architectures) & set(self.ARCHITECTURES)
        ):
            raise ConfigError(
                f"{type(self).__name__} got model_type={model_type!r}, architectures={architectures}; it "
                f"supports model_type={self.MODEL_TYPE!r} with architectures {list(self.ARCHITECTURES)}. "
                f"Supported architectures overall: {_supported_names()}"
            )


def _positive(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{type(config).__name__}.{name} must be positive, got {value}")


def _unsupported(config: object, key: str, value: Any, allowed: tuple[Any, ...], why: str) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{type(config).__name__}: {key}={value!r} is not supported ({why}); "
            f"allowed: {', '.join(repr(a) for a in allowed)}"
        )


@dataclass
class LLaDAConfig(ModelConfig):
    """LLaDA config.json (OLMo-style keys); defaults are those of LLaDA-8B.

    ``n_kv_heads`` None means ``n_heads`` (``multi_query_attention: true`` means 1); ``mlp_hidden_size``
    None means ``mlp_ratio * d_model``; ``embedding_size`` None means ``vocab_size`` (the embedding and the
    head have ``embedding_size`` rows, so the model emits that many logits). As in the original config
    class, these three keys are None when a config.json omits them.
    """

    ARCHITECTURES: ClassVar[tuple[str, ...]] = ("LLaDAModelLM",)
    MODEL_TYPE: ClassVar[str] = "llada"
    ABSENT_MEANS_NONE: ClassVar[tuple[str, ...]] = ("n_kv_heads", "mlp_hidden_size", "embedding_size")
    LAYER_COUNT_KEY: ClassVar[str] = "n_layers"
    MAX_POSITIONS_KEY: ClassVar[str] = "max_sequence_length"
    VOCAB_KEYS: ClassVar[tuple[str, ...]] = ("vocab_size", "embedding_size")
    PUBLISHED_NAME: ClassVar[str] = "llada-8b"
    PUBLISHED_KEYS: ClassVar[Mapping[str, Any]] = types.MappingProxyType(
        {"n_kv_heads": 32, "embedding_size": 126464}
    )
    TINY_SHAPES: ClassVar[Mapping[str, Any]] = types.MappingProxyType(
        {"d_model": 32, "n_layers": 2, "n_heads": 4, "mlp_hidden_size": 64, "max_sequence_length": 256}
    )

    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None
    mlp_hidden_size: int | None = 12288
    mlp_ratio: int = 4
    vocab_size: int = 126464
    embedding_size: int | None = None
    max_sequence_length: int = 4096
    rope: bool = True
    rope_theta: float = 500000.0
    rope_full_precision: bool = True
    rms_norm_eps: float = 1e-5
    include_bias: bool = False
    include_qkv_bias: bool = False
    weight_tying: bool = False
    mask_token_id: int = 126336
    eos_token_id: int = 126081
    pad_token_id: int = 126081
    bos_token_id: int | None = None
    block_type: str = "llama"
    activation_type: str = "silu"
    layer_norm_type: str = "rms"
    layer_norm_with_affine: bool = True
    bias_for_layer_norm: bool | None = None
    attention_layer_norm: bool = False
    alibi: bool = False
    multi_query_attention: bool | None = None
    scale_logits: bool = False
    input_emb_norm: bool = False
    clip_qkv: float | None = None
    use_cache: bool = False
    flash_attention: bool = False
    model_type: str = "llada"
    architectures: list[str] = field(default_factory=lambda: ["LLaDAModelLM"])
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._check_identity(self.architectures, self.model_type)
        _positive(self, "d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "mlp_ratio")
        _positive(self, "vocab_size", "embedding_size", "max_sequence_length", "rope_theta", "rms_norm_eps")
        _unsupported(self, "block_type", self.block_type, ("llama",), "only LLaDALlamaBlock is implemented")
        _unsupported(
            self, "activation_type", self.activation_type, ("silu",), "the llama block gates by SiLU"
        )
        _unsupported(self, "layer_norm_type", self.layer_norm_type, ("rms",), "LLaDA uses RMSNorm")
        _unsupported(self, "layer_norm_with_affine", self.layer_norm_with_affine, (True,), "norms have gains")
        _unsupported(
            self, "bias_for_layer_norm", self.bias_for_layer_norm, (None, False), "norms have no bias"
        )
        _unsupported(self, "include_bias", self.include_bias, (False,), "LLaDA linears have no bias")
        _unsupported(self, "attention_layer_norm", self.attention_layer_norm, (False,), "no q/k norm")
        _unsupported(self, "alibi", self.alibi, (False,), "positions are encoded by RoPE only")
        _unsupported(self, "rope", self.rope, (True,), "positions are encoded by RoPE only")
        _unsupported(self, "scale_logits", self.scale_logits, (False,), "logits are not rescaled")
        _unsupported(self, "input_emb_norm", self.input_emb_norm, (False,), "embeddings are not rescaled")
        _unsupported(self, "clip_qkv", self.clip_qkv, (None,), "q/k/v are not clipped")
        if self.multi_query_attention and self.n_kv_heads not in (None, 1):
            raise ConfigError(
                f"LLaDAConfig: multi_query_attention=true needs n_kv_heads 1 or null, got {self.n_kv_heads}"
            )
        d = self.dims()
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"LLaDAConfig: d_model={self.d_model} is not divisible by n_heads={self.n_heads}"
            )
        if self.n_heads % d.num_kv_heads:
            raise ConfigError(
                f"LLaDAConfig: n_heads={self.n_heads} is not a multiple of n_kv_heads={d.num_kv_heads}"
            )
        if d.vocab_size < self.vocab_size:
            raise ConfigError(
                f"LLaDAConfig: embedding_size={self.embedding_size} < vocab_size={self.vocab_size}"
            )
        _check_token_ids(self, d.vocab_size)

    def dims(self) -> ModelDims:
        """The common shape description (see ``ModelDims``)."""
        kv = 1 if self.multi_query_attention else (self.n_kv_heads or self.n_heads)
        return ModelDims(
            hidden_size=self.d_model,
            num_layers=self.n_layers,
            num_heads=self.n_heads,
            num_kv_heads=kv,
            head_dim=self.d_model // self.n_heads,
            intermediate_size=self.mlp_hidden_size or self.mlp_ratio * self.d_model,
            vocab_size=self.embedding_size or self.vocab_size,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            qkv_bias=self.include_qkv_bias,
            tie_embeddings=self.weight_tying,
        )


@dataclass
class DreamConfig(ModelConfig):
    """Dream config.json (Qwen2 keys); defaults are those of Dream-v0-Base-7B.

    ``num_key_value_heads`` None means ``num_attention_heads``. q/k/v always have a bias (Qwen2).
    """

    ARCHITECTURES: ClassVar[tuple[str, ...]] = ("DreamModel",)
    MODEL_TYPE: ClassVar[str] = "Dream"
    LAYER_COUNT_KEY: ClassVar[str] = "num_hidden_layers"
    MAX_POSITIONS_KEY: ClassVar[str] = "max_position_embeddings"
    VOCAB_KEYS: ClassVar[tuple[str, ...]] = ("vocab_size",)
    PUBLISHED_NAME: ClassVar[str] = "dream-7b"
    TINY_SHAPES: ClassVar[Mapping[str, Any]] = types.MappingProxyType(
        {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 256,
        }
    )

    hidden_size: int = 3584
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int | None = 4
    intermediate_size: int = 18944
    vocab_size: int = 152064
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 131072
    mask_token_id: int = 151666
    pad_token_id: int = 151643
    bos_token_id: int = 151643
    eos_token_id: int = 151643
    rope_scaling: dict[str, Any] | None = None
    use_sliding_window: bool = False
    use_cache: bool = False
    model_type: str = "Dream"
    architectures: list[str] = field(default_factory=lambda: ["DreamModel"])
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._check_identity(self.architectures, self.model_type)
        _positive(self, "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
        _positive(self, "intermediate_size", "vocab_size", "rms_norm_eps", "rope_theta")
        _positive(self, "max_position_embeddings")
        _unsupported(self, "hidden_act", self.hidden_act, ("silu",), "the MLP gates by SiLU")
        _unsupported(self, "rope_scaling", self.rope_scaling, (None,), "plain RoPE only")
        _unsupported(self, "use_sliding_window", self.use_sliding_window, (False,), "attention is global")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"DreamConfig: hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        d = self.dims()
        if self.num_attention_heads % d.num_kv_heads:
            raise ConfigError(
                f"DreamConfig: num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={d.num_kv_heads}"
            )
        head_dim = self.extra.get("head_dim")
        if head_dim is not None and head_dim != d.head_dim:
            raise ConfigError(
                f"DreamConfig: head_dim={head_dim} differs from hidden_size/num_attention_heads="
                f"{d.head_dim}; a decoupled head_dim is not supported"
            )
        _check_token_ids(self, d.vocab_size)

    def dims(self) -> ModelDims:
        """The common shape description (see ``ModelDims``)."""
        return ModelDims(
            hidden_size=self.hidden_size,
            num_layers=self.num_hidden_layers,
            num_heads=self.num_attention_heads,
            num_kv_heads=self.num_key_value_heads or self.num_attention_heads,
            head_dim=self.hidden_size // self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            vocab_size=self.vocab_size,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            qkv_bias=True,
            tie_embeddings=self.tie_word_embeddings,
        )


def _check_token_ids(config: LLaDAConfig | DreamConfig, n_logits: int) -> None:
    name = type(config).__name__
    for key in ("mask_token_id", "eos_token_id", "pad_token_id", "bos_token_id"):
        value = getattr(config, key)
        if value is not None and not 0 <= value < n_logits:
            raise ConfigError(f"{name}: {key}={value} is outside the vocabulary [0, {n_logits})")
    if config.pad_token_id == config.mask_token_id:
        raise ConfigError(
            f"{name}: pad_token_id equals mask_token_id ({config.mask_token_id}); padding would be "
            "indistinguishable from masked positions"
        )


CONFIG_CLASSES: tuple[type[LLaDAConfig] | type[DreamConfig], ...] = (LLaDAConfig, DreamConfig)


def _config_classes() -> tuple[type[ModelConfig], ...]:
    """`CONFIG_CLASSES` plus LLaDA2's (in its own module, which imports this one)."""
    from dllm_sampler.config_llada2 import LLaDA2MoeConfig

    return (*CONFIG_CLASSES, LLaDA2MoeConfig)


def _supported_names() -> list[str]:
    return [a for c in _config_classes() for a in c.ARCHITECTURES]


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Pick the config class from ``architectures`` (or, without it, ``model_type``) and build it."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a JSON object (dict), got {type(data).__name__}")
    archs = data.get("architectures") or []
    model_type = data.get("model_type")
    for cls in _config_classes():
        if set(archs) & set(cls.ARCHITECTURES) or (not archs and model_type == cls.MODEL_TYPE):
            return cls.from_dict(data)
    raise ConfigError(
        f"unsupported model: architectures={archs}, model_type={model_type!r}. Supported architectures: "
        f"{_supported_names()} (model_type "
        f"{[c.MODEL_TYPE for c in _config_classes()]})"
    )
