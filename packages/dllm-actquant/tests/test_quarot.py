"""QuaRot: float invariance (both layouts, Kronecker widths), outlier reduction, size and order errors."""

from __future__ import annotations

import dllm_kernels
import hypothesis.strategies as st
import pytest
import torch
from dllm_actquant import (
    ActQuantConfig,
    OnlineHadamard,
    QuaRotConfig,
    SmoothQuantConfig,
    TransformError,
    apply_quarot,
    apply_smoothquant,
    capture_inputs,
    outlier_ratio,
    quantize_activations,
    random_hadamard,
)
from hypothesis import given


@given(arch=st.sampled_from(["llada", "dream"]), seed=st.integers(0, 1000), randomize=st.booleans())
def test_quarot_keeps_logits_fp64(make_model, batches, relerr, arch, seed, randomize) -> None:
    dlm = make_model(arch, seed=seed % 7)
    data = batches(n=2, seed=seed)
    with torch.no_grad():
        ref = [dlm.logits(x) for x in data]
        result = apply_quarot(dlm, QuaRotConfig(seed=seed, randomize=randomize))
        for x, r in zip(data, ref, strict=True):
            assert relerr(dlm.logits(x), r) < 1e-9
    assert result.r1 is not None and result.r2 is not None
    eye = torch.eye(result.r1.shape[0], dtype=torch.float64)
    torch.testing.assert_close(result.r1 @ result.r1.T, eye)
    downs = [b.names["down"] for b in dlm.topology]
    assert sorted(result.online) == sorted([*downs, *(b.names["o"] for b in dlm.topology)])
    assert all(isinstance(dlm.model.get_submodule(n), OnlineHadamard) for n in downs)
    assert result.qk == [b.names["qk"] for b in dlm.topology]


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_quarot_fp32_and_kronecker_768(make_model, batches, relerr, arch) -> None:
    """Hidden 256, head dim 64, MLP 768 = 12 * 64 as in the tiny models; fp32 tolerance 1e-4 relative."""
    dlm = make_model(arch, dtype=torch.float32, hidden=256, heads=4, kv_heads=2, mlp=768)
    data = batches(n=2)
    with torch.no_grad():
        ref = [dlm.logits(x) for x in data]
        apply_quarot(dlm)
        assert max(relerr(dlm.logits(x), r) for x, r in zip(data, ref, strict=True)) < 1e-4


def test_tied_head_is_untied_when_needed(make_model, batches, relerr) -> None:
    dlm = make_model("dream")
    dlm.model.untie_head()
    emb = dlm.model.model.embed_tokens
    dlm.model.lm_head = None  # tie again: the head is the embedding
    dlm.config.tie_word_embeddings = True
    data = batches(n=1)
    with torch.no_grad():
        ref = dlm.logits(data[0])
        apply_quarot(dlm)
        assert relerr(dlm.logits(data[0]), ref) < 1e-9
    assert dlm.model.lm_head is not None and dlm.model.model.embed_tokens is emb


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_rotation_lowers_down_input_outliers(make_model, batches, outliers, arch) -> None:
    """max|x| / RMS of the down-projection input drops when the online Hadamard is on."""
    dlm = make_model(arch)
    outliers(dlm, factor=30.0)
    data = batches()
    downs = [b.names["down"] for b in dlm.topology]
    with torch.no_grad():
        before = capture_inputs(dlm, data, downs).samples
        apply_quarot(dlm)
        targets = dlm.topology.weight_holders()
        after = capture_inputs(dlm, data, [targets[n] for n in downs]).samples
    for n in downs:
        r_before, r_after = outlier_ratio(before[n]), outlier_ratio(after[targets[n]])
        assert r_before > 8 and r_after < r_before / 2.5, (n, r_before, r_after)


def test_unsupported_hadamard_size_leaves_model_untouched(make_model) -> None:
    assert not dllm_kernels.supported_hadamard_size(92)
    dlm = make_model("llada", mlp=92)
    before = {k: v.clone() for k, v in dlm.model.state_dict().items()}
    with pytest.raises(ValueError, match=r"order 92 \(QuaRot R4"):
        apply_quarot(dlm)
    assert all(torch.equal(before[k], v) for k, v in dlm.model.state_dict().items())
    apply_quarot(dlm, QuaRotConfig(online_down=False))  # R1 and R2 alone work
    with pytest.raises(ValueError, match="no Hadamard matrix of order 92"):
        random_hadamard(92, torch.Generator())


def test_transforms_after_quarot_or_quantization_fail_clearly(make_model, batches) -> None:
    dlm = make_model("llada")
    data = batches(n=1)
    with torch.no_grad():
        stats = capture_inputs(dlm, data, dlm.topology.linear_names()).absmax
    apply_quarot(dlm)
    with pytest.raises(TransformError, match=r"OnlineRotation|OnlineHadamard"):
        apply_smoothquant(dlm, stats, SmoothQuantConfig())
    with pytest.raises(TransformError, match=r"OnlineRotation|OnlineHadamard"):
        apply_quarot(dlm)
    names = quantize_activations(dlm, ActQuantConfig(bits=8))
    assert len(names) == 7 * len(dlm.topology)
    with pytest.raises(ValueError, match="already has an activation quantizer"):
        quantize_activations(dlm, ActQuantConfig(bits=8))
