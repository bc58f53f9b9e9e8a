"""Attention activation sites: QuaRot's R3 and cross-head o rotation (exact in float), Q/K/V quantizers,
their summary and their run-time record."""

from __future__ import annotations

import pytest
import torch
from dllm_actquant import (
    AttnQuantConfig,
    HeadRotation,
    QKHadamard,
    QKQuant,
    QuaRotConfig,
    VQuantConfig,
    VQuantOutput,
    VQuantParams,
    apply_quarot,
    attach_attention_quantizers,
    attach_v_quantizers,
    attention_site_summary,
    fake_quantize_activation,
    fake_quantize_heads,
    head_mixing_matrix,
    restore_wrappers,
    stripped_wrappers,
)
from dllm_actquant.act_quant import ActQuantConfig
from dllm_actquant.rotation import OnlineRotation
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

SHAPES = {
    "mha-gqa": {"hidden": 128, "heads": 4, "kv_heads": 2, "mlp": 384},
    "odd-heads-64": {"hidden": 192, "heads": 3, "kv_heads": 1, "mlp": 384},
}
"""The second has head dim 64, three query heads (no Hadamard of order 3) and one kv head."""

EDITS = {
    "r3": {"rotate_residual": False, "rotate_vo": False, "online_down": False, "online_o": False},
    "online_o": {"rotate_residual": False, "rotate_vo": False, "online_down": False, "rotate_qk": False},
    "complete": {},
}


@pytest.mark.parametrize("edit", sorted(EDITS))
@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_quarot_edits_keep_fp32_logits(make_model, batches, relerr, arch, shape, edit) -> None:
    dlm = make_model(arch, dtype=torch.float32, **SHAPES[shape])
    data = batches(n=2)
    with torch.no_grad():
        ref = [dlm.logits(x) for x in data]
        result = apply_quarot(dlm, QuaRotConfig(seed=3, **EDITS[edit]))
        for x, r in zip(data, ref, strict=True):
            assert relerr(dlm.logits(x), r) < 1e-4
    config = QuaRotConfig(seed=3, **EDITS[edit])
    assert bool(result.qk) == config.rotate_qk
    assert (result.heads is not None) == config.online_o


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_r3_and_o_rotation_are_really_applied(make_model, batches, arch) -> None:
    """The wrappers sit where they should, and a wrong rotation (q rotated, k not) breaks the logits: the
    invariance test above could fail."""
    dlm = make_model(arch, dtype=torch.float32, **SHAPES["odd-heads-64"])
    x = batches(n=1)[0]
    with torch.no_grad():
        ref = dlm.logits(x)
        apply_quarot(dlm, QuaRotConfig(seed=1))
        block = dlm.topology.block(0)
        site, o = block.module("qk"), block.module("o")
        assert isinstance(site, QKHadamard) and site.head_dim == 64
        assert isinstance(o, OnlineRotation) and isinstance(o.rotation, HeadRotation)
        assert o.rotation.heads == 3
        torch.testing.assert_close(o.rotation.mixing @ o.rotation.mixing.T, torch.eye(3, dtype=torch.float64))

        class OnlyQ(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, q, k):
                q2, _ = self.inner(q, k)
                return q2, k

        block_site = block.names["qk"]
        parent, _, child = block_site.rpartition(".")
        setattr(dlm.model.get_submodule(parent), child, OnlyQ(site))
        assert (dlm.logits(x) - ref).abs().max() > 1e-2


def test_head_mixing_matrix_is_hadamard_when_one_exists() -> None:
    g = torch.Generator().manual_seed(0)
    h4 = head_mixing_matrix(4, g)
    assert torch.allclose(h4.abs(), torch.full((4, 4), 0.5, dtype=torch.float64))
    c3 = head_mixing_matrix(3, g)
    torch.testing.assert_close(c3 @ c3.T, torch.eye(3, dtype=torch.float64))


@settings(max_examples=20, deadline=None)
@given(
    heads=st.integers(1, 4),
    head_dim=st.sampled_from([4, 8]),
    bits=st.sampled_from([4, 8]),
    symmetric=st.booleans(),
    per_head=st.booleans(),
    clip=st.sampled_from([1.0, 0.9]),
    seed=st.integers(0, 100),
    token_major=st.booleans(),
)
def test_fake_quantize_heads_matches_row_quantizer(
    heads, head_dim, bits, symmetric, per_head, clip, seed, token_major
):
    """Per head: each (token, head) row of Dh values is one activation row; per token: the rows are the
    tokens' concatenated heads. The same for a contiguous x and for one laid out [B, L, H, Dh] (q and k
    after RoPE)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 5, heads, head_dim, generator=g) * torch.linspace(0.1, 4.0, head_dim)
    x = x.transpose(1, 2) if token_major else x.transpose(1, 2).contiguous()
    config = AttnQuantConfig(bits=bits, symmetric=symmetric, per_head=per_head, clip_ratio=clip)
    act = ActQuantConfig(bits=bits, symmetric=symmetric, granularity="token", clip_ratio=clip)
    got = fake_quantize_heads(x, config)
    if per_head:
        want = fake_quantize_activation(x.reshape(-1, head_dim), act).reshape(x.shape)
    else:
        rows = x.transpose(1, 2).reshape(10, heads * head_dim)
        want = fake_quantize_activation(rows, act).reshape(2, 5, heads, head_dim).transpose(1, 2)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    levels = got.reshape(-1, head_dim) if per_head else got.transpose(1, 2).reshape(10, -1)
    assert max(len(torch.unique(r)) for r in levels) <= 2**bits


@pytest.mark.parametrize("sites", [("q", "k"), ("k",), ("q", "v")])
def test_qk_site_quantizes_the_chosen_tensors_as_fake_quantize_heads_does(sites) -> None:
    """q (4 heads) and k (2 kv heads) go through one kernel call; each comes out as its own
    `fake_quantize_heads`, an unchosen one untouched."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 7, 4, 8, generator=g).transpose(1, 2)
    k = torch.randn(1, 7, 2, 8, generator=g).transpose(1, 2) * 3
    config = AttnQuantConfig(bits=4, symmetric=False, sites=sites)
    got_q, got_k = QKQuant(lambda a, b: (a, b), config)(q, k)
    for name, got, x in (("q", got_q, q), ("k", got_k, k)):
        want = fake_quantize_heads(x, config) if name in sites else x
        assert got.shape == x.shape and torch.equal(got, want), name
        assert torch.equal(got, x) == (name not in sites), name  # 4 bits change a chosen tensor


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_attention_quantizers_wrap_the_sites_and_describe_them(make_model, batches, arch) -> None:
    dlm = make_model(arch, dtype=torch.float32)
    x = batches(n=1)[0]
    with torch.no_grad():
        ref = dlm.logits(x)
        assert attention_site_summary(dlm) == {
            "q": "float",
            "k": "float",
            "v": "float",
            "qk_rotation": "none",
        }
        config = AttnQuantConfig(bits=4, symmetric=False, per_head=True, clip_ratio=1.0)
        names = attach_attention_quantizers(dlm, config)
        out = dlm.logits(x)
    assert len(names) == 2 * len(dlm.topology)
    block = dlm.topology.block(0)
    assert isinstance(block.module("qk"), QKQuant) and isinstance(block.module("v"), VQuantOutput)
    assert block.module("v").config.granularity == "token"
    assert attention_site_summary(dlm) == {
        "q": "int4 asym per-token-head",
        "k": "int4 asym per-token-head",
        "v": "int4 asym per-token-head",
        "qk_rotation": "none",
    }
    assert (out - ref).abs().max() > 1e-4  # 4-bit Q/K/V change the logits


def test_k_only_per_token_and_an_existing_v_quantizer_is_kept(make_model) -> None:
    dlm = make_model("dream", dtype=torch.float32)
    iaaq_like = {b.index: VQuantParams(alpha=torch.full((b.n_kv_heads,), 0.8)) for b in dlm.topology}
    attach_v_quantizers(dlm, VQuantConfig(bits=4, granularity="token"), iaaq_like)
    apply_v = dlm.topology.block(0).module("v")
    names = attach_attention_quantizers(
        dlm, AttnQuantConfig(bits=4, per_head=False, clip_ratio=0.9, sites=("k", "v"))
    )
    assert dlm.topology.block(0).module("v") is apply_v
    assert all(n.endswith("qk_site") for n in names)
    summary = attention_site_summary(dlm)
    assert summary["q"] == "float" and summary["k"] == "int4 sym per-token clip0.9"
    assert summary["v"] == "int4 asym per-token-head clip0.8"


def test_v_row_granularity_needs_equal_clip() -> None:
    with pytest.raises(ValueError, match="equal for all heads"):
        VQuantParams(alpha=torch.tensor([1.0, 0.5])).check(VQuantConfig(bits=4, granularity="row"), 2, 4)


@pytest.mark.parametrize("bad", [{"bits": 3}, {"sites": ("q", "x")}, {"sites": ()}, {"clip_ratio": 0.0}])
def test_attn_quant_config_rejects_bad_settings(bad) -> None:
    with pytest.raises(ValueError, match="AttnQuantConfig"):
        AttnQuantConfig(**bad)


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_runtime_record_restores_rotations_and_attention_quantizers(make_model, batches, arch) -> None:
    """QuaRot complete + K/V quantizers: strip, record, rebuild on a fresh copy -> identical logits."""
    dlm = make_model(arch, dtype=torch.float32, **SHAPES["odd-heads-64"])
    x = batches(n=1)[0]
    with torch.no_grad():
        apply_quarot(dlm, QuaRotConfig(seed=2))
        attach_attention_quantizers(dlm, AttnQuantConfig(bits=4, per_head=False, sites=("k", "v")))
        want = dlm.logits(x)
        with stripped_wrappers(dlm) as state:
            plain = {k: v.clone() for k, v in dlm.model.state_dict().items()}
            record, tensors = state.record, dict(state.tensors)
        assert record["format"] == 2 and len(record["attention"]) == len(dlm.topology)
        assert all(
            chain[0].keys() == {"quant"} and chain[1] == {"hadamard": 64}
            for chain in record["attention"].values()
        )
        fresh = make_model(arch, dtype=torch.float32, **SHAPES["odd-heads-64"])
        fresh.model.load_state_dict(plain)
        restore_wrappers(fresh, record, tensors)
        torch.testing.assert_close(fresh.logits(x), want, rtol=0, atol=0)
    assert attention_site_summary(fresh) == attention_site_summary(dlm)


def test_format_1_records_are_still_read(make_model) -> None:
    dlm = make_model("llada", dtype=torch.float32)
    restore_wrappers(dlm, {"format": 1, "linears": {}, "vquant": None}, {})
    with pytest.raises(ValueError, match="unsupported runtime format"):
        restore_wrappers(dlm, {"format": 9, "linears": {}}, {})
