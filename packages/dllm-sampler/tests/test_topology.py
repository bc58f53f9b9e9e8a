"""Topology: exact names (LLaDA ff_out clash), module roles, and invariance of every edit.

Edits are checked on random tiny float64 models: logits before and after must agree to rtol = atol = 1e-9
(float64 rounding of a few matmuls is ~1e-15; a wrong edit moves logits by >1e-3).
"""

from __future__ import annotations

import pytest
import torch
from dllm_sampler import DiffusionLM, Topology, tiny_config
from hypothesis import given
from hypothesis import strategies as st


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> None:
    """|actual - expected| <= atol + rtol * |expected| elementwise, same shape and dtype."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    diff = (actual - expected).abs().max().item()
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), f"max |diff| = {diff:.3g}"


TOL = dict(rtol=1e-9, atol=1e-9)
CONFIGS = {
    "llada": {},
    "llada-gqa": {"n_kv_heads": 2},
    "llada-qkv-bias": {"include_qkv_bias": True, "n_kv_heads": 1},
    "dream": {},
    "dream-mha": {"num_key_value_heads": 4},
}


def make(kind: str, seed: int = 0, randomize_norms: bool = True, **kw) -> DiffusionLM:
    """A float64 model; norm gains and q/k/v biases randomised so that no edit is trivially exact."""
    dlm = DiffusionLM.from_config(tiny_config(kind.split("-")[0], **{**CONFIGS[kind], **kw}), seed=seed)
    dlm.to(torch.float64)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in dlm.model.named_parameters():
            if randomize_norms and ("norm" in name or name.endswith("ln_f.weight")):
                p.copy_(0.5 + torch.rand(p.shape, generator=g, dtype=p.dtype))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return dlm


def inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 44, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :2] = 0
    return ids, mask


def random_orthogonal(n: int, seed: int, batch: tuple[int, ...] = ()) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(*batch, n, n, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]


def log_uniform(n: int, seed: int, span: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.exp(span * (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1))


# ----- structure ---------------------------------------------------------------------------------------


def test_llada_names_and_ff_out_clash() -> None:
    dlm = make("llada")
    topo = dlm.topology
    names = topo.linear_names()
    assert names[:7] == [
        f"model.transformer.blocks.0.{n}"
        for n in ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")
    ]
    assert len(names) == 14 and len(set(names)) == 14
    assert "model.transformer.ff_out" not in names
    assert topo.linear_names(include_head=True) == [*names, "model.transformer.ff_out"]
    assert topo.head is dlm.model.model.transformer["ff_out"]
    block = topo.blocks[1]
    assert block.down_proj is dlm.model.model.transformer["blocks"][1].ff_out
    assert block.gate_proj is dlm.model.model.transformer["blocks"][1].ff_proj
    assert block.o_proj is dlm.model.model.transformer["blocks"][1].attn_out
    assert topo.embedding_name == "model.transformer.wte" and topo.final_norm_name == "model.transformer.ln_f"
    assert set(topo.linear_names(include_head=True)) == {
        n for n, m in dlm.model.named_modules() if isinstance(m, torch.nn.Linear)
    }


def test_dream_names_and_gqa_shape() -> None:
    topo = make("dream").topology
    b = topo.blocks[0]
    assert b.names == {
        "attn_norm": "model.layers.0.input_layernorm",
        "q": "model.layers.0.self_attn.q_proj",
        "k": "model.layers.0.self_attn.k_proj",
        "v": "model.layers.0.self_attn.v_proj",
        "qk": "model.layers.0.self_attn.qk_site",
        "o": "model.layers.0.self_attn.o_proj",
        "mlp_norm": "model.layers.0.post_attention_layernorm",
        "gate": "model.layers.0.mlp.gate_proj",
        "up": "model.layers.0.mlp.up_proj",
        "down": "model.layers.0.mlp.down_proj",
    }
    assert (b.n_heads, b.n_kv_heads, b.head_dim, b.gqa_groups) == (4, 2, 8, 2)
    assert b.attn_inputs == [b.q_proj, b.k_proj, b.v_proj] and b.mlp_inputs == [b.gate_proj, b.up_proj]
    assert topo.head_name == "lm_head" and topo.arch == "dream" and len(topo) == 2


def test_tied_head_is_never_listed() -> None:
    topo = make("llada", weight_tying=True).topology
    assert topo.head is None and topo.head_name is None
    assert topo.linear_names(include_head=True) == topo.linear_names()


# ----- invariance of the edits -----------------------------------------------------------------------


@given(
    kind=st.sampled_from(sorted(CONFIGS)),
    which=st.sampled_from(["attn", "mlp"]),
    block=st.integers(0, 1),
    seed=st.integers(0, 2**16),
)
def test_fold_norm_scale_keeps_logits(kind: str, which: str, block: int, seed: int) -> None:
    dlm = make(kind, seed)
    ids, mask = inputs(seed)
    ref = dlm.logits(ids, mask)
    topo = dlm.topology
    _, linears = topo.blocks[block].norm_consumers(which)
    before = linears[0].weight.clone()
    topo.fold_norm_scale(block, which, log_uniform(32, seed))
    assert not torch.allclose(before, linears[0].weight)
    assert_close(dlm.logits(ids, mask), ref, **TOL)


@given(kind=st.sampled_from(sorted(CONFIGS)), block=st.integers(0, 1), seed=st.integers(0, 2**16))
def test_fold_vo_scale_keeps_logits_with_gqa(kind: str, block: int, seed: int) -> None:
    dlm = make(kind, seed)
    ids, mask = inputs(seed)
    ref = dlm.logits(ids, mask)
    b = dlm.topology.blocks[block]
    s = log_uniform(b.n_kv_heads * b.head_dim, seed)
    dlm.topology.fold_vo_scale(block, s)
    assert_close(dlm.logits(ids, mask), ref, **TOL)


def test_fold_vo_scale_needs_the_group_expansion() -> None:
    """Control: scaling o's columns with s repeated per kv head (not per query group) breaks GQA models."""
    dlm = make("dream")
    ids, mask = inputs(0)
    ref = dlm.logits(ids, mask)
    b = dlm.topology.blocks[0]
    s = log_uniform(16, 0)
    with torch.no_grad():
        b.v_proj.weight.div_(s[:, None])
        b.v_proj.bias.div_(s)
        b.o_proj.weight.mul_(s.repeat(2))  # wrong layout: tiles kv heads instead of expanding groups
    assert (dlm.logits(ids, mask) - ref).abs().max() > 1e-4


@given(kind=st.sampled_from(sorted(CONFIGS)), block=st.integers(0, 1), seed=st.integers(0, 2**16))
def test_fold_up_down_scale_keeps_logits(kind: str, block: int, seed: int) -> None:
    dlm = make(kind, seed)
    ids, mask = inputs(seed)
    ref = dlm.logits(ids, mask)
    dlm.topology.fold_up_down_scale(block, log_uniform(64, seed))
    assert_close(dlm.logits(ids, mask), ref, **TOL)


@given(kind=st.sampled_from(sorted(CONFIGS)), seed=st.integers(0, 2**16))
def test_fuse_norms_then_rotate_residual_keeps_logits(kind: str, seed: int) -> None:
    dlm = make(kind, seed)
    ids, mask = inputs(seed)
    ref = dlm.logits(ids, mask)
    topo = dlm.topology
    topo.fuse_norms()
    assert all(
        bool((m.weight == 1).all()) for n, m in dlm.model.named_modules() if type(m).__name__ == "RMSNorm"
    )
    assert_close(dlm.logits(ids, mask), ref, **TOL)
    emb_before = topo.embedding.weight.clone()
    topo.rotate_residual(random_orthogonal(32, seed))
    assert not torch.allclose(emb_before, topo.embedding.weight)
    assert_close(dlm.logits(ids, mask), ref, **TOL)


@given(kind=st.sampled_from(sorted(CONFIGS)), per_head=st.booleans(), seed=st.integers(0, 2**16))
def test_rotate_vo_keeps_logits(kind: str, per_head: bool, seed: int) -> None:
    dlm = make(kind, seed)
    ids, mask = inputs(seed)
    ref = dlm.logits(ids, mask)
    n_kv = dlm.topology.blocks[0].n_kv_heads
    h = random_orthogonal(8, seed, (n_kv,) if per_head else ())
    dlm.topology.rotate_vo(h)
    assert_close(dlm.logits(ids, mask), ref, **TOL)


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_tied_model_fuse_needs_untie_then_everything_composes(arch: str) -> None:
    key = {"llada": "weight_tying", "dream": "tie_word_embeddings"}[arch]
    dlm = make(arch, 3, **{key: True})
    ids, mask = inputs(3)
    ref = dlm.logits(ids, mask)
    topo = dlm.topology
    with pytest.raises(ValueError, match="untie_head"):
        topo.fuse_norms()
    topo.untie_head()
    assert dlm.topology.head is not None and not getattr(dlm.config, key)
    assert_close(dlm.logits(ids, mask), ref, **TOL)
    topo = dlm.topology
    topo.fuse_norms()
    topo.rotate_residual(random_orthogonal(32, 4))
    topo.rotate_vo(random_orthogonal(8, 5))
    for i in range(len(topo)):
        topo.fold_vo_scale(i, log_uniform(topo.blocks[i].n_kv_heads * 8, 6 + i))
        topo.fold_up_down_scale(i, log_uniform(64, 8 + i))
        topo.fold_norm_scale(i, "mlp", log_uniform(32, 10 + i))
    assert_close(dlm.logits(ids, mask), ref, **TOL)


def test_tied_model_with_unit_final_gain_rotates_without_untie() -> None:
    dlm = make("dream", 7, randomize_norms=False, tie_word_embeddings=True)
    ids, mask = inputs(7)
    ref = dlm.logits(ids, mask)
    dlm.topology.fuse_norms()
    dlm.topology.rotate_residual(random_orthogonal(32, 8))
    assert dlm.topology.head is None
    assert_close(dlm.logits(ids, mask), ref, **TOL)


def test_half_precision_edits_keep_dtype_and_stay_close() -> None:
    dlm = make("dream", 9)
    ids, mask = inputs(9)
    dlm.to(torch.bfloat16)
    ref = dlm.logits(ids, mask)
    dlm.topology.fold_up_down_scale(0, torch.full((64,), 2.0))  # powers of two are exact in bf16
    assert dlm.topology.blocks[0].up_proj.weight.dtype == torch.bfloat16
    assert_close(dlm.logits(ids, mask), ref, rtol=0, atol=0)


# ----- input validation ------------------------------------------------------------------------------


def test_edit_errors_are_clear() -> None:
    topo = make("llada").topology
    with pytest.raises(ValueError, match="fuse_norms"):
        topo.rotate_residual(torch.eye(32, dtype=torch.float64))
    topo.fuse_norms()
    with pytest.raises(ValueError, match="not orthogonal"):
        topo.rotate_residual(2 * torch.eye(32, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[32, 32\]"):
        topo.rotate_residual(torch.eye(16, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(32,\)"):
        topo.fold_norm_scale(0, "attn", torch.ones(31))
    with pytest.raises(ValueError, match="non-zero"):
        topo.fold_up_down_scale(0, torch.zeros(64))
    with pytest.raises(ValueError, match="'attn' or 'mlp'"):
        topo.fold_norm_scale(0, "ffn", 2.0)
    with pytest.raises(IndexError, match="2 blocks"):
        topo.fold_vo_scale(5, 2.0)
    with pytest.raises(ValueError, match=r"\[8, 8\]"):
        topo.rotate_vo(torch.eye(4, dtype=torch.float64))
    with pytest.raises(TypeError, match="supported"):
        Topology(torch.nn.Linear(2, 2))


class _Wrapper(torch.nn.Module):
    """A run-time wrapper: keeps the wrapped layer as ``inner``."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_weight_holders_follow_inner_through_wrappers() -> None:
    dlm = DiffusionLM.from_config(tiny_config("dream"), seed=0)
    topo = dlm.topology
    assert topo.weight_holders() == {n: n for n in topo.linear_names()}
    block = topo.block(1)
    parent, _, child = block.names["v"].rpartition(".")
    setattr(dlm.model.get_submodule(parent), child, _Wrapper(_Wrapper(block.module("v"))))
    assert block.weight_holder("v") == f"{block.names['v']}.inner.inner"
    assert topo.weight_holders()[block.names["v"]] == f"{block.names['v']}.inner.inner"
    assert isinstance(dlm.model.get_submodule(block.weight_holder("v")), torch.nn.Linear)
    assert block.weight_holder("q") == block.names["q"]
    loop = _Wrapper(torch.nn.Identity())
    loop.inner = loop
    setattr(dlm.model.get_submodule(parent), child, loop)
    with pytest.raises(RuntimeError, match="wrapper chain deeper"):
        block.weight_holder("v")
