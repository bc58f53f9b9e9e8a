"""Synthetic models: the published LLaDA-8B / Dream-7B shapes exactly; 1-layer checkpoints load and run.

The full-size shapes are checked on the meta device (no memory); the checkpoints that are really built keep
the real hidden, head and MLP sizes with one block and a small vocabulary (the 126464 x 4096 embedding
alone would be 1 GB in bfloat16).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dllm_bench.commands.bench import SYNTHETIC_NAMES
from dllm_bench.commands.work.bench import SYNTHETIC
from dllm_bench.synthetic import (
    ARCH_OF_SHAPES,
    SHAPES,
    synthetic_checkpoint,
    synthetic_config,
    synthetic_model,
)
from dllm_sampler import load, tiny_config

# docs/references.md#llada-8b (LLaDA-8B config.json) and #dream-7b (Dream-v0-7B config.json)
LLADA_8B = {
    "d_model": 4096,
    "n_layers": 32,
    "n_heads": 32,
    "n_kv_heads": 32,
    "mlp_hidden_size": 12288,
    "vocab_size": 126464,
    "embedding_size": 126464,
    "max_sequence_length": 4096,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "include_bias": False,
    "include_qkv_bias": False,
    "weight_tying": False,
    "mask_token_id": 126336,
    "eos_token_id": 126081,
    "block_type": "llama",
    "activation_type": "silu",
    "model_type": "llada",
    "architectures": ["LLaDAModelLM"],
}
DREAM_7B = {
    "hidden_size": 3584,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "intermediate_size": 18944,
    "vocab_size": 152064,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "mask_token_id": 151666,
    "pad_token_id": 151643,
    "model_type": "Dream",
    "architectures": ["DreamModel"],
}
PUBLISHED = {"llada": ("llada-8b", LLADA_8B), "dream": ("dream-7b", DREAM_7B)}


def _llada_parameters(d: int, layers: int, mlp: int, vocab: int) -> int:
    """Embedding + head, per block q/k/v/o + gate/up/down + two norm gains, final norm (no biases)."""
    return 2 * vocab * d + layers * (4 * d * d + 3 * d * mlp + 2 * d) + d


def _dream_parameters(d: int, layers: int, mlp: int, vocab: int, kv: int) -> int:
    """As LLaDA, with GQA k/v of ``kv`` channels and biases on q, k and v."""
    attention = (d * d + d) + 2 * (d * kv + kv) + d * d
    return 2 * vocab * d + layers * (attention + 3 * d * mlp + 2 * d) + d


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_config_has_the_published_values(arch: str) -> None:
    shapes, published = PUBLISHED[arch]
    config = synthetic_config(arch, shapes).to_dict()
    assert {k: config[k] for k in published} == published
    assert synthetic_config(arch).to_dict() == config  # None means the arch's published shapes
    assert config.get("bos_token_id") == (None if arch == "llada" else 151643)


def test_llada_8b_parameter_names_and_shapes() -> None:
    dlm = synthetic_model("llada", "llada-8b", device="meta")
    state = {k: tuple(v.shape) for k, v in dlm.model.state_dict().items()}
    assert state["model.transformer.wte.weight"] == (126464, 4096)
    assert state["model.transformer.ff_out.weight"] == (126464, 4096)  # the untied LM head
    block = "model.transformer.blocks.31."
    for name in ("q_proj", "k_proj", "v_proj", "attn_out"):
        assert state[f"{block}{name}.weight"] == (4096, 4096)
    assert state[f"{block}ff_proj.weight"] == state[f"{block}up_proj.weight"] == (12288, 4096)
    assert state[f"{block}ff_out.weight"] == (4096, 12288)
    assert "model.transformer.blocks.32.q_proj.weight" not in state
    assert sum(v.numel() for v in dlm.model.parameters()) == _llada_parameters(4096, 32, 12288, 126464)
    assert {p.dtype for p in dlm.model.parameters()} == {torch.bfloat16}


def test_dream_7b_parameter_names_and_shapes() -> None:
    dlm = synthetic_model("dream", "dream-7b", device="meta", dtype=torch.float16)
    state = {k: tuple(v.shape) for k, v in dlm.model.state_dict().items()}
    assert state["model.embed_tokens.weight"] == state["lm_head.weight"] == (152064, 3584)
    attn, mlp = "model.layers.27.self_attn.", "model.layers.27.mlp."
    assert state[f"{attn}q_proj.weight"] == state[f"{attn}o_proj.weight"] == (3584, 3584)
    assert state[f"{attn}k_proj.weight"] == state[f"{attn}v_proj.weight"] == (512, 3584)  # 4 kv heads x 128
    assert state[f"{attn}q_proj.bias"] == (3584,) and state[f"{attn}k_proj.bias"] == (512,)
    assert state[f"{mlp}gate_proj.weight"] == state[f"{mlp}up_proj.weight"] == (18944, 3584)
    assert state[f"{mlp}down_proj.weight"] == (3584, 18944)
    assert "model.layers.28.mlp.up_proj.weight" not in state
    expected = _dream_parameters(3584, 28, 18944, 152064, kv=512)
    assert sum(v.numel() for v in dlm.model.parameters()) == expected
    assert {p.dtype for p in dlm.model.parameters()} == {torch.float16}


def test_overrides_change_only_what_they_name() -> None:
    full = synthetic_config("llada", "llada-8b").dims()
    small = synthetic_config("llada", "llada-8b", n_layers=2, vocab_size=300)
    d = small.dims()
    assert (d.num_layers, d.vocab_size) == (2, 300)
    assert (d.hidden_size, d.num_heads, d.num_kv_heads, d.intermediate_size, d.head_dim) == (
        full.hidden_size,
        full.num_heads,
        full.num_kv_heads,
        full.intermediate_size,
        full.head_dim,
    )
    assert (small.mask_token_id, small.eos_token_id, small.pad_token_id) == (299, 298, 298)
    dream = synthetic_config("dream", n_layers=3)
    assert dream.num_hidden_layers == 3 and dream.mask_token_id == DREAM_7B["mask_token_id"]


def test_synthetic_names_are_each_arch_published_and_tiny_shapes() -> None:
    assert ARCH_OF_SHAPES == {"llada-8b": "llada", "dream-7b": "dream"}
    assert SYNTHETIC == {
        "llada-8b": ("llada", "llada-8b"),
        "dream-7b": ("dream", "dream-7b"),
        "llada-tiny": ("llada", "tiny"),
        "dream-tiny": ("dream", "tiny"),
    }
    assert tuple(SYNTHETIC) == SYNTHETIC_NAMES  # the CLI's import-light list of names


def test_tiny_shapes_are_the_tiny_config() -> None:
    for arch in ("llada", "dream"):
        assert synthetic_config(arch, "tiny").dims() == tiny_config(arch).dims()
    assert set(SHAPES) == {"llada-8b", "dream-7b", "tiny"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("gpt", None), "unknown model arch 'gpt'; known archs: 'llada', 'dream'"),
        (("gpt", "tiny"), "unknown model arch"),
        (("llada", "llama-70b"), "unknown shapes"),
        (("dream", "llada-8b"), "not dream"),
        (("llada", None, 0), "n_layers"),
        (("llada", None, None, 1), "vocab_size"),
    ],
)
def test_bad_arguments_are_refused(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthetic_config(*args)


def test_seed_makes_weights_reproducible() -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        return list(synthetic_model("dream", "tiny", seed=seed).model.state_dict().values())

    first, same, other = weights(3), weights(3), weights(4)
    assert all(torch.equal(a, b) for a, b in zip(first, same, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_integer_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="floating dtype"):
        synthetic_model("llada", "tiny", dtype=torch.int32)


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_one_layer_checkpoint_loads_and_runs(arch: str, tmp_path: Path) -> None:
    shapes = PUBLISHED[arch][0]
    folder = synthetic_checkpoint(arch, shapes, 1, folder=tmp_path / arch, vocab_size=256, seed=3)
    with pytest.warns(UserWarning, match="tokenizer"):
        dlm = load(folder)
    d, full = dlm.config.dims(), synthetic_config(arch, shapes).dims()
    assert (d.num_layers, d.vocab_size) == (1, 256)
    assert (d.hidden_size, d.num_heads, d.num_kv_heads, d.intermediate_size) == (
        full.hidden_size,
        full.num_heads,
        full.num_kv_heads,
        full.intermediate_size,
    )
    assert dlm.dtype == torch.bfloat16 and dlm.mask_token_id == 255
    weight = dlm.model.get_submodule(dlm.topology.block(0).names["down"]).weight
    assert tuple(weight.shape) == (full.hidden_size, full.intermediate_size)
    assert 0.015 < weight.float().std().item() < 0.025  # N(0, 0.02) initialisation
    ids = torch.tensor([[1, 7, 42, 255, 255]])
    logits = dlm.logits(ids)
    assert logits.shape == (1, 5, 256) and torch.isfinite(logits).all()
