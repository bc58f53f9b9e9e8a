"""SmoothQuant: float invariance on both layouts, the range balance it targets, GQA skip and errors."""

from __future__ import annotations

import logging

import hypothesis.strategies as st
import pytest
import torch
from dllm_actquant import (
    ActQuantConfig,
    SmoothQuantConfig,
    TransformError,
    apply_smoothquant,
    capture_inputs,
    channel_spread,
    mark_quantized,
    quantize_activations,
    range_imbalance,
    smoothquant_scales,
)
from hypothesis import given


@given(
    arch=st.sampled_from(["llada", "dream"]),
    seed=st.integers(0, 50),
    alpha=st.floats(0.0, 1.0),
    vo=st.booleans(),
    up_down=st.booleans(),
)
def test_smoothquant_keeps_logits_fp64(make_model, batches, relerr, arch, seed, alpha, vo, up_down) -> None:
    dlm = make_model(arch, seed=seed)
    data = batches(n=2, seed=seed)
    with torch.no_grad():
        ref = [dlm.logits(x) for x in data]
        stats = capture_inputs(dlm, data, dlm.topology.linear_names()).absmax
        apply_smoothquant(dlm, stats, SmoothQuantConfig(alpha=alpha, vo=vo, up_down=up_down))
        for x, r in zip(data, ref, strict=True):
            assert relerr(dlm.logits(x), r) < 1e-9


def test_smoothquant_keeps_logits_fp32(make_model, batches, relerr) -> None:
    """fp32 tolerance: 1e-5 relative (measured ~1e-7)."""
    dlm = make_model("llada", dtype=torch.float32)
    data = batches(n=2)
    with torch.no_grad():
        ref = [dlm.logits(x) for x in data]
        stats = capture_inputs(dlm, data, dlm.topology.linear_names()).absmax
        apply_smoothquant(dlm, stats, SmoothQuantConfig(vo=True, up_down=True))
        assert max(relerr(dlm.logits(x), r) for x, r in zip(data, ref, strict=True)) < 1e-5


def _w_absmax(mods) -> torch.Tensor:
    return torch.stack([m.weight.detach().abs().amax(0) for m in mods]).amax(0)


@pytest.mark.parametrize("arch", ["llada", "dream"])
@pytest.mark.parametrize("up_down", [False, True])
def test_smoothquant_balances_activation_and_weight_ranges(
    make_model, batches, outliers, arch, up_down
) -> None:
    """max|X_j| / max|W_j| spread drops to ~1 at alpha 0.5; the activation outlier channels shrink.

    (With up_down the up projection's rows are rescaled after the mlp-norm fold, so the gate/up pair is
    checked without it.)
    """
    dlm = make_model(arch)
    outliers(dlm, factor=30.0)
    data = batches()
    topo = dlm.topology
    b = topo.blocks[0]
    q, gate, down = b.names["q"], b.names["gate"], b.names["down"]
    with torch.no_grad():
        before = capture_inputs(dlm, data, [q, gate, down]).absmax
        imbalance = {
            n: range_imbalance(before[n], _w_absmax(m))
            for n, m in ((q, b.attn_inputs), (gate, b.mlp_inputs), (down, [b.down_proj]))
        }
        stats = capture_inputs(dlm, data, topo.linear_names()).absmax
        apply_smoothquant(dlm, stats, SmoothQuantConfig(up_down=up_down))
        after = capture_inputs(dlm, data, [q, gate, down]).absmax
    assert min(imbalance.values()) > 30
    assert range_imbalance(after[q], _w_absmax(b.attn_inputs)) < 1 + 1e-6
    assert channel_spread(after[q]) < channel_spread(before[q]) / 3
    if up_down:
        assert range_imbalance(after[down], _w_absmax([b.down_proj])) < 1 + 1e-6
        assert channel_spread(after[down]) < channel_spread(before[down]) / 3
    else:
        assert range_imbalance(after[gate], _w_absmax(b.mlp_inputs)) < 1 + 1e-6
        torch.testing.assert_close(after[down], before[down], rtol=1e-12, atol=0)


def test_gqa_skips_vo_with_a_log_line(make_model, batches, caplog) -> None:
    dlm = make_model("dream")
    data = batches(n=1)
    o_before = [b.o_proj.weight.detach().clone() for b in dlm.topology]
    with torch.no_grad():
        stats = capture_inputs(dlm, data, dlm.topology.linear_names()).absmax
    with caplog.at_level(logging.WARNING, logger="dllm_actquant"):
        scales = apply_smoothquant(dlm, stats, SmoothQuantConfig(vo=True))
    assert any("grouped-query" in r.getMessage() for r in caplog.records)
    assert all(torch.equal(b.o_proj.weight, w) for b, w in zip(dlm.topology, o_before, strict=True))
    assert not any(name.endswith("v_proj") for name in scales)
    mha = make_model("llada")
    with torch.no_grad():
        stats = capture_inputs(mha, data, mha.topology.linear_names()).absmax
    assert any(n.endswith("v_proj") for n in apply_smoothquant(mha, stats, SmoothQuantConfig(vo=True)))


def test_smoothquant_scales_formula() -> None:
    a = torch.tensor([4.0, 1.0, 0.0, 9.0])
    w = torch.tensor([[1.0, -4.0, 2.0, 0.0], [0.5, 1.0, 1.0, 0.0]])
    s = smoothquant_scales(a, [w], alpha=0.5)
    torch.testing.assert_close(s, torch.tensor([2.0, 0.5, 1.0, 1.0], dtype=torch.float64))


def test_errors(make_model, batches) -> None:
    dlm = make_model("llada")
    data = batches(n=1)
    with torch.no_grad():
        stats = capture_inputs(dlm, data, dlm.topology.linear_names()).absmax
    with pytest.raises(KeyError, match="input absmax"):
        apply_smoothquant(dlm, {})
    with pytest.raises(ValueError, match="alpha"):
        SmoothQuantConfig(alpha=1.5)
    mark_quantized(dlm.topology.blocks[1].up_proj)  # what a weight quantizer does
    with pytest.raises(TransformError, match="already quantized"):
        apply_smoothquant(dlm, stats)
    other = make_model("dream")
    quantize_activations(other, ActQuantConfig())
    with pytest.raises(TransformError, match="already quantized"):
        apply_smoothquant(other, stats)
