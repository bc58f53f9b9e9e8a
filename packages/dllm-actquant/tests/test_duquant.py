"""DuQuant: building blocks (greedy rotation, zigzag), float invariance on both layouts, outlier reduction."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from dllm_actquant import (
    BlockRotation,
    DuQuantConfig,
    OnlineRotation,
    TransformError,
    apply_duquant,
    capture_inputs,
    duquant_rotation,
    effective_block_size,
    greedy_block_rotation,
    outlier_ratio,
    zigzag_permutation,
)
from dllm_actquant.duquant import _spreading_base
from dllm_actquant.smoothquant import input_scale
from hypothesis import given


def _outlier_samples(seed: int, n: int = 64, c: int = 64, k: int = 3, factor: float = 40.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64)
    x[:, torch.randperm(c, generator=g)[:k]] *= factor
    return x


@given(seed=st.integers(0, 10_000), b=st.sampled_from([1, 2, 8, 32]))
def test_spreading_base_is_orthogonal_with_uniform_first_row(seed: int, b: int) -> None:
    base = _spreading_base(b, torch.Generator().manual_seed(seed))
    torch.testing.assert_close(base @ base.T, torch.eye(b, dtype=torch.float64))
    torch.testing.assert_close(base[0], torch.full((b,), b**-0.5, dtype=torch.float64))


@given(seed=st.integers(0, 10_000))
def test_greedy_rotation_is_orthogonal_and_lowers_the_peak(seed: int) -> None:
    x = _outlier_samples(seed, c=32)
    base = _spreading_base(32, torch.Generator().manual_seed(seed))
    rot = greedy_block_rotation(x, base, max_steps=16)
    torch.testing.assert_close(rot @ rot.T, torch.eye(32, dtype=torch.float64))
    assert float((x @ rot).abs().max()) < 0.7 * float(x.abs().max())
    assert torch.equal(greedy_block_rotation(x, base, max_steps=0), torch.eye(32, dtype=torch.float64))


def test_zigzag_permutation_balances_blocks() -> None:
    maxima = torch.tensor([float(v) for v in range(16)])  # channel c has max c
    perm = zigzag_permutation(torch.diag(maxima), block=4)
    assert sorted(perm.tolist()) == list(range(16))
    blocks = perm.view(4, 4)
    # zigzag over sorted maxima 15..0: block 0 gets ranks 0, 7, 8, 15, block 3 gets ranks 3, 4, 11, 12
    assert blocks[0].tolist() == [15, 8, 7, 0] and blocks[3].tolist() == [12, 11, 4, 3]
    sums = maxima[blocks].sum(1)
    assert float(sums.max() - sums.min()) == 0.0


def test_effective_block_size() -> None:
    assert effective_block_size(384, 128) == 128
    assert effective_block_size(96, 128) == 96
    assert effective_block_size(100, 64) == 50
    assert effective_block_size(7, 4) == 1


@given(seed=st.integers(0, 1000), times=st.integers(0, 2), block=st.sampled_from([16, 32, 128]))
def test_duquant_rotation_is_orthogonal(seed: int, times: int, block: int) -> None:
    x = _outlier_samples(seed, c=96)
    cfg = DuQuantConfig(block_size=block, max_rotation_step=8, permutation_times=times)
    rot = BlockRotation(duquant_rotation(x, cfg, torch.Generator().manual_seed(seed)))
    assert rot.kinds == ["rot", "perm"] * times + ["rot"]
    m = rot.matrix()
    torch.testing.assert_close(m @ m.T, torch.eye(96, dtype=torch.float64))
    torch.testing.assert_close(rot(x), x @ m)
    assert float(rot(x).abs().max()) < float(x.abs().max())


@given(
    arch=st.sampled_from(["llada", "dream"]),
    seed=st.integers(0, 100),
    block=st.sampled_from([16, 32, 128]),
    times=st.integers(0, 1),
    smooth=st.booleans(),
)
def test_duquant_keeps_logits_fp64(make_model, batches, relerr, arch, seed, block, times, smooth) -> None:
    dlm = make_model(arch, seed=seed % 5)
    data = batches(n=2, seed=seed)
    cfg = DuQuantConfig(
        block_size=block, max_rotation_step=8, permutation_times=times, smooth=smooth, seed=seed
    )
    with torch.no_grad():
        ref = [dlm.logits(x) for x in data]
        samples = capture_inputs(dlm, data, dlm.topology.linear_names(), max_tokens=64).samples
        result = apply_duquant(dlm, samples, cfg)
        for x, r in zip(data, ref, strict=True):
            assert relerr(dlm.logits(x), r) < 1e-9
    assert len(result.rotations) == 4 * len(dlm.topology)
    assert len(result.scales) == (4 * len(dlm.topology) if smooth else 0)
    assert all(isinstance(dlm.model.get_submodule(n), OnlineRotation) for n in dlm.topology.linear_names())


def test_duquant_smooths_gqa_vo_on_the_kv_channels(make_model, batches) -> None:
    """Dream (4 heads, 2 kv heads): the o site's scale has one entry per kv channel, and the o input the
    rotation was built for is the float input divided by that scale repeated over each group's heads."""
    dlm = make_model("dream")
    data = batches(n=2)
    b = dlm.topology.blocks[0]
    with torch.no_grad():
        cap = capture_inputs(dlm, data, dlm.topology.linear_names(), max_tokens=64)
        result = apply_duquant(dlm, cap.samples, DuQuantConfig(block_size=32, max_rotation_step=4))
        seen: list[torch.Tensor] = []  # the OnlineRotation's input: smoothed, not yet rotated
        hook = b.o_proj.register_forward_pre_hook(
            lambda m, inp: seen.append(inp[0].reshape(-1, inp[0].shape[-1]))
        )
        for x in data:
            dlm.logits(x)
        hook.remove()
        after = torch.cat(seen).abs().amax(0)
    s = result.scales["0.o"]
    assert s.shape == (b.n_kv_heads * b.head_dim,) and float(s.log().abs().max()) > 0.1
    expanded = s.view(b.n_kv_heads, 1, b.head_dim).expand(-1, b.gqa_groups, -1).reshape(-1)
    torch.testing.assert_close(after, cap.absmax[b.names["o"]] / expanded)
    torch.testing.assert_close(input_scale(b, "vo", s), expanded, rtol=0, atol=0)  # what the samples get


def test_duquant_fp32(make_model, batches, relerr) -> None:
    """fp32 tolerance: 1e-4 relative."""
    dlm = make_model("dream", dtype=torch.float32)
    data = batches(n=2)
    with torch.no_grad():
        ref = [dlm.logits(x) for x in data]
        samples = capture_inputs(dlm, data, dlm.topology.linear_names(), max_tokens=64).samples
        apply_duquant(dlm, samples, DuQuantConfig(block_size=32, max_rotation_step=8))
        assert max(relerr(dlm.logits(x), r) for x, r in zip(data, ref, strict=True)) < 1e-4


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_duquant_lowers_outlier_ratio(make_model, batches, outliers, arch) -> None:
    dlm = make_model(arch)
    outliers(dlm, factor=30.0)
    data = batches()
    topo = dlm.topology
    watched = [topo.blocks[0].names[r] for r in ("q", "gate", "down")]
    with torch.no_grad():
        cap = capture_inputs(dlm, data, topo.linear_names(), max_tokens=128)
        apply_duquant(dlm, cap.samples, DuQuantConfig(block_size=32, max_rotation_step=16))
        targets = dlm.topology.weight_holders()
        after = capture_inputs(dlm, data, [targets[n] for n in watched]).samples
    for n in watched:
        r_before, r_after = outlier_ratio(cap.samples[n]), outlier_ratio(after[targets[n]])
        assert r_before > 8 and r_after < r_before / 2.5, (n, r_before, r_after)


def test_duquant_errors(make_model, batches) -> None:
    dlm = make_model("llada")
    with pytest.raises(KeyError, match="capture_inputs"):
        apply_duquant(dlm, {})
    with pytest.raises(ValueError, match="sites"):
        DuQuantConfig(sites=("qkv", "mlp"))
    with pytest.raises(ValueError, match="block_size"):
        DuQuantConfig(block_size=0)
    with torch.no_grad():
        samples = capture_inputs(dlm, batches(n=1), dlm.topology.linear_names(), max_tokens=32).samples
    apply_duquant(dlm, samples, DuQuantConfig(block_size=32, max_rotation_step=2, sites=("down",)))
    with pytest.raises(TransformError, match="OnlineRotation"):
        apply_duquant(dlm, samples, DuQuantConfig(block_size=32, max_rotation_step=2))
