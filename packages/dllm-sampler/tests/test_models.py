"""Model code: exact HF parameter names and shapes, forward shapes/dtypes, padding, bidirectionality."""

from __future__ import annotations

import pytest
import torch
from dllm_sampler.config import DreamConfig, LLaDAConfig
from dllm_sampler.models import DreamModel, LLaDAModelLM


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> None:
    """|actual - expected| <= atol + rtol * |expected| elementwise, same shape and dtype."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    diff = (actual - expected).abs().max().item()
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), f"max |diff| = {diff:.3g}"


def llada_config(**kw) -> LLaDAConfig:
    base = dict(
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=4,
        mlp_hidden_size=48,
        vocab_size=40,
        mask_token_id=39,
        eos_token_id=38,
        pad_token_id=37,
        max_sequence_length=64,
    )
    return LLaDAConfig(**{**base, **kw})


def dream_config(**kw) -> DreamConfig:
    base = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        vocab_size=40,
        mask_token_id=39,
        eos_token_id=38,
        pad_token_id=37,
        bos_token_id=36,
        max_position_embeddings=64,
    )
    return DreamConfig(**{**base, **kw})


def llada_names(n_layers: int, tied: bool, qkv_bias: bool = False) -> set[str]:
    names = {"model.transformer.wte.weight", "model.transformer.ln_f.weight"}
    if not tied:
        names.add("model.transformer.ff_out.weight")
    for i in range(n_layers):
        p = f"model.transformer.blocks.{i}."
        names |= {
            p + m + ".weight"
            for m in (
                "attn_norm",
                "q_proj",
                "k_proj",
                "v_proj",
                "attn_out",
                "ff_norm",
                "ff_proj",
                "up_proj",
                "ff_out",
            )
        }
        if qkv_bias:
            names |= {p + m + ".bias" for m in ("q_proj", "k_proj", "v_proj")}
    return names


def dream_names(n_layers: int, tied: bool) -> set[str]:
    names = {"model.embed_tokens.weight", "model.norm.weight"}
    if not tied:
        names.add("lm_head.weight")
    for i in range(n_layers):
        p = f"model.layers.{i}."
        names |= {
            p + "input_layernorm.weight",
            p + "post_attention_layernorm.weight",
            p + "self_attn.o_proj.weight",
        }
        names |= {p + f"self_attn.{m}_proj.{t}" for m in "qkv" for t in ("weight", "bias")}
        names |= {p + f"mlp.{m}_proj.weight" for m in ("gate", "up", "down")}
    return names


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_llada_state_dict_names_and_shapes(tied: bool, qkv_bias: bool) -> None:
    cfg = llada_config(n_kv_heads=2, weight_tying=tied, include_qkv_bias=qkv_bias)
    sd = LLaDAModelLM(cfg).state_dict()
    assert set(sd) == llada_names(2, tied, qkv_bias)
    assert sd["model.transformer.wte.weight"].shape == (40, 32)
    assert sd["model.transformer.blocks.1.q_proj.weight"].shape == (32, 32)
    assert sd["model.transformer.blocks.1.k_proj.weight"].shape == (16, 32)
    assert sd["model.transformer.blocks.1.attn_out.weight"].shape == (32, 32)
    assert sd["model.transformer.blocks.0.ff_proj.weight"].shape == (48, 32)
    assert sd["model.transformer.blocks.0.ff_out.weight"].shape == (32, 48)
    if not tied:
        assert sd["model.transformer.ff_out.weight"].shape == (40, 32)


def test_llada_8b_names_on_meta() -> None:
    """The default config is LLaDA-8B: build it on the meta device and compare against the real layout."""
    with torch.device("meta"):
        model = LLaDAModelLM(LLaDAConfig())
    sd = model.state_dict()
    assert set(sd) == llada_names(32, tied=False)
    assert sd["model.transformer.wte.weight"].shape == (126464, 4096)
    assert sd["model.transformer.blocks.31.ff_proj.weight"].shape == (12288, 4096)
    assert sd["model.transformer.blocks.31.ff_out.weight"].shape == (4096, 12288)
    assert sd["model.transformer.ff_out.weight"].shape == (126464, 4096)


def test_dream_7b_names_on_meta() -> None:
    with torch.device("meta"):
        model = DreamModel(DreamConfig())
    sd = model.state_dict()
    assert set(sd) == dream_names(28, tied=False)
    assert sd["model.layers.27.self_attn.q_proj.weight"].shape == (3584, 3584)
    assert sd["model.layers.27.self_attn.k_proj.weight"].shape == (512, 3584)
    assert sd["model.layers.27.self_attn.v_proj.bias"].shape == (512,)
    assert sd["model.layers.0.mlp.down_proj.weight"].shape == (3584, 18944)
    assert sd["lm_head.weight"].shape == (152064, 3584)


@pytest.mark.parametrize("tied", [False, True])
def test_dream_state_dict_names(tied: bool) -> None:
    assert set(DreamModel(dream_config(tie_word_embeddings=tied)).state_dict()) == dream_names(2, tied)


@pytest.mark.parametrize(
    "build", [lambda: LLaDAModelLM(llada_config(n_kv_heads=2)), lambda: DreamModel(dream_config())]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_forward_shape_and_dtype(build, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = build().to(dtype)
    ids = torch.randint(0, 40, (3, 7))
    logits = model(ids)
    assert logits.shape == (3, 7, 40)
    assert logits.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.isfinite(logits).all()
    if dtype != torch.float32:
        ref = model.float()(ids)
        tol = 1e-5 if dtype == torch.float64 else 0.1  # vs the float32 model
        assert (logits.float() - ref).abs().max() < tol * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("build", [lambda: LLaDAModelLM(llada_config()), lambda: DreamModel(dream_config())])
def test_left_padding_matches_unpadded(build) -> None:
    torch.manual_seed(1)
    model = build().double()
    short = torch.randint(0, 37, (1, 5))
    long = torch.randint(0, 37, (1, 8))
    pad = 37
    batch = torch.cat([torch.cat([torch.full((1, 3), pad), short], 1), long])
    mask = torch.cat([torch.cat([torch.zeros(1, 3), torch.ones(1, 5)], 1), torch.ones(1, 8)]).long()
    out = model(batch, mask)
    assert_close(out[0, 3:], model(short)[0], rtol=1e-10, atol=1e-10)
    assert_close(out[1], model(long)[0], rtol=1e-10, atol=1e-10)
    # The mask matters: without it the pad tokens are attended and the real-token logits change.
    assert (model(batch)[0, 3:] - out[0, 3:]).abs().max() > 1e-6


@pytest.mark.parametrize("build", [lambda: LLaDAModelLM(llada_config()), lambda: DreamModel(dream_config())])
def test_attention_is_bidirectional(build) -> None:
    """Changing the last token changes the logits at the first position (no causal mask)."""
    torch.manual_seed(2)
    model = build().double()
    ids = torch.randint(0, 37, (1, 6))
    other = ids.clone()
    other[0, -1] = (ids[0, -1] + 1) % 37
    assert (model(ids)[0, 0] - model(other)[0, 0]).abs().max() > 1e-8


def test_gqa_matches_explicit_head_repeat() -> None:
    """A GQA model equals the MHA model whose k/v weights repeat each kv head over its query group."""
    torch.manual_seed(3)
    gqa = DreamModel(dream_config(num_key_value_heads=2)).double()
    mha = DreamModel(dream_config(num_key_value_heads=4)).double()
    sd = gqa.state_dict()
    for name, t in list(sd.items()):
        if ".k_proj." in name or ".v_proj." in name:
            sd[name] = t.view(2, 8, *t.shape[1:]).repeat_interleave(2, dim=0).reshape(32, *t.shape[1:])
    mha.load_state_dict(sd)
    ids = torch.randint(0, 40, (2, 6))
    assert_close(gqa(ids), mha(ids), rtol=1e-12, atol=1e-12)
