"""Configs: real config.json keys round-trip, validation errors name the problem, dims are derived right."""

from __future__ import annotations

import pytest
from dllm_sampler.config import ConfigError, DreamConfig, LLaDAConfig, config_from_dict

# The published config.json files (GSAI-ML/LLaDA-8B-Base, Dream-org/Dream-v0-Base-7B), abridged auto_map.
LLADA_8B = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig"},
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": 4096,
    "embedding_dropout": 0.0,
    "embedding_size": 126464,
    "eos_token_id": 126081,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": 126336,
    "max_sequence_length": 4096,
    "mlp_hidden_size": 12288,
    "mlp_ratio": 4,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": 32,
    "n_kv_heads": 32,
    "n_layers": 32,
    "pad_token_id": 126081,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "scale_logits": False,
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": 126464,
    "weight_tying": False,
}
DREAM_7B = {
    "architectures": ["DreamModel"],
    "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_dream.DreamConfig"},
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "mask_token_id": 151666,
    "max_position_embeddings": 131072,
    "max_window_layers": 28,
    "model_type": "Dream",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "pad_token_id": 151643,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.2",
    "use_cache": False,
    "use_sliding_window": False,
    "vocab_size": 152064,
}


@pytest.mark.parametrize("data", [LLADA_8B, DREAM_7B])
def test_real_configs_round_trip_unchanged(data: dict) -> None:
    config = config_from_dict(data)
    assert config.to_dict() == data
    assert config.extra["auto_map"] == data["auto_map"]


def test_real_dims() -> None:
    d = LLaDAConfig.from_dict(LLADA_8B).dims()
    assert (d.hidden_size, d.num_layers, d.num_heads, d.num_kv_heads, d.head_dim) == (4096, 32, 32, 32, 128)
    assert (d.intermediate_size, d.vocab_size, d.rope_theta, d.qkv_bias) == (12288, 126464, 500000.0, False)
    e = DreamConfig.from_dict(DREAM_7B).dims()
    assert (e.hidden_size, e.num_heads, e.num_kv_heads, e.head_dim, e.gqa_groups) == (3584, 28, 4, 128, 7)
    assert (e.intermediate_size, e.vocab_size, e.qkv_bias, e.rms_norm_eps) == (18944, 152064, True, 1e-6)


def test_defaults_are_the_released_models() -> None:
    assert LLaDAConfig().dims() == LLaDAConfig.from_dict(LLADA_8B).dims()
    assert DreamConfig().dims() == DreamConfig.from_dict(DREAM_7B).dims()


def test_unknown_architecture_names_supported_ones() -> None:
    with pytest.raises(ConfigError, match=r"LLaDAModelLM.*DreamModel"):
        config_from_dict({**DREAM_7B, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"})
    with pytest.raises(ConfigError, match="LLaDAModelLM"):
        LLaDAConfig.from_dict(DREAM_7B)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("alibi", True),
        ("include_bias", True),
        ("block_type", "sequential"),
        ("activation_type", "gelu"),
        ("layer_norm_type", "default"),
        ("scale_logits", True),
        ("rope", False),
        ("attention_layer_norm", True),
        ("clip_qkv", 8.0),
        ("input_emb_norm", True),
    ],
)
def test_llada_unsupported_options_are_named(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        LLaDAConfig.from_dict({**LLADA_8B, key: value})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hidden_act", "gelu"),
        ("rope_scaling", {"type": "yarn", "factor": 4.0}),
        ("use_sliding_window", True),
        ("head_dim", 64),
    ],
)
def test_dream_unsupported_options_are_named(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        DreamConfig.from_dict({**DREAM_7B, key: value})


def test_type_and_shape_validation() -> None:
    with pytest.raises(ConfigError, match="d_model"):
        LLaDAConfig.from_dict({**LLADA_8B, "d_model": "4096"})
    with pytest.raises(ConfigError, match="n_kv_heads"):
        LLaDAConfig.from_dict({**LLADA_8B, "n_kv_heads": 5})
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        DreamConfig.from_dict({**DREAM_7B, "num_key_value_heads": 3})
    with pytest.raises(ConfigError, match="mask_token_id"):
        DreamConfig.from_dict({**DREAM_7B, "mask_token_id": 152064})
    with pytest.raises(ConfigError, match="pad_token_id equals mask_token_id"):
        LLaDAConfig.from_dict({**LLADA_8B, "pad_token_id": 126336})
    with pytest.raises(ConfigError, match="JSON object"):
        config_from_dict(["not", "a", "dict"])  # type: ignore[arg-type]


def test_llada_gqa_and_optional_keys() -> None:
    gqa = LLaDAConfig.from_dict({**LLADA_8B, "n_kv_heads": 8}).dims()
    assert (gqa.num_heads, gqa.num_kv_heads, gqa.gqa_groups) == (32, 8, 4)
    mqa = LLaDAConfig.from_dict({**LLADA_8B, "n_kv_heads": None, "multi_query_attention": True}).dims()
    assert mqa.num_kv_heads == 1
    implicit = {
        k: v for k, v in LLADA_8B.items() if k not in ("n_kv_heads", "mlp_hidden_size", "embedding_size")
    }
    d = LLaDAConfig.from_dict(implicit).dims()
    assert (d.num_kv_heads, d.intermediate_size, d.vocab_size) == (32, 4 * 4096, 126464)
    assert "n_kv_heads" not in LLaDAConfig.from_dict(implicit).to_dict()


def test_model_type_fallback_without_architectures() -> None:
    data = {k: v for k, v in DREAM_7B.items() if k != "architectures"}
    data["architectures"] = []
    assert isinstance(config_from_dict(data), DreamConfig)
