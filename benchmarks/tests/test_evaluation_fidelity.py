"""Mask-ratio fidelity: the logit comparison primitive, exact-count masking, self-comparison on the shipped
tiny models (both logit layouts), and perturbed copies that must score worse the more they are perturbed."""

from __future__ import annotations

import json

import dllm_sampler
import hypothesis.strategies as st
import pytest
import torch
from dllm_bench.evaluation import (
    arithmetic_inputs,
    code_inputs,
    compare_logits,
    mask_exactly,
    mask_ratio_fidelity,
)
from dllm_sampler import DiffusionLM, tiny_config
from dllm_sampler.testing import random_char_model
from hypothesis import given


def perturbed(name: str, scale: float, seed: int = 0) -> DiffusionLM:
    """The shipped model ``name`` in float32 with Gaussian noise of ``scale`` x its RMS on one down_proj."""
    dlm = dllm_sampler.load(name, dtype=torch.float32)
    weight = dlm.topology.block(1).down_proj.weight
    noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        weight.add_(scale * weight.pow(2).mean().sqrt() * noise)
    return dlm


@given(
    n=st.integers(1, 6),
    v=st.integers(2, 12),
    seed=st.integers(0, 2**16),
    temperature=st.floats(0.1, 10.0),
)
def test_compare_logits_is_a_kl_and_an_argmax_match(n: int, v: int, seed: int, temperature: float) -> None:
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(n, v, generator=g) * temperature
    other = torch.randn(n, v, generator=g) * temperature
    kl, agree = compare_logits(ref, ref)
    assert torch.equal(kl, torch.zeros(n, dtype=torch.float64)) and bool(agree.all())

    kl, agree = compare_logits(other.double() + 5.0, ref)  # logits are shift invariant
    p, q = torch.softmax(ref.double(), -1), torch.softmax(other.double(), -1)
    expected = (p * (p.log() - q.log())).sum(-1)
    assert torch.allclose(kl, expected, rtol=1e-6, atol=1e-9)
    assert bool((kl >= -1e-12).all())
    assert torch.equal(agree, ref.argmax(-1) == other.argmax(-1))


def test_compare_logits_handles_tokens_a_model_rules_out() -> None:
    ref = torch.tensor([[0.0, 1.0, float("-inf")]])
    kl, agree = compare_logits(torch.tensor([[0.0, 1.0, 3.0]]), ref)
    assert bool(torch.isfinite(kl).all()) and float(kl) > 0 and not bool(agree.any())  # argmax 2 vs 1
    kl, _ = compare_logits(torch.tensor([[0.0, float("-inf"), 1.0]]), ref)
    assert float(kl) == float("inf")


@given(
    rows=st.integers(1, 4),
    length=st.integers(2, 30),
    ratio=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
)
def test_mask_exactly_masks_the_asked_count_of_maskable_positions(
    rows: int, length: int, ratio: float, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 50, (rows, length), generator=g)
    maskable = torch.rand(rows, length, generator=g) < 0.6
    maskable[:, -1] = True
    noisy, masked = mask_exactly(ids, maskable, ratio, 3, torch.Generator().manual_seed(seed))
    counts = maskable.sum(1)
    assert torch.equal(masked.sum(1), (counts.double() * ratio).round().long().clamp(min=1))
    assert not bool((masked & ~maskable).any())
    assert torch.equal(noisy, torch.where(masked, torch.full_like(ids, 3), ids))
    again, _ = mask_exactly(ids, maskable, ratio, 3, torch.Generator().manual_seed(seed))
    assert torch.equal(again, noisy)


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_shipped_model_against_itself_agrees_exactly(name: str) -> None:
    dlm = dllm_sampler.load(name, dtype=torch.float32)
    rows = mask_ratio_fidelity(dlm, dlm, ratios=(0.3, 0.9), problems=2, code_chunks=2)
    assert [(r.source, r.mask_ratio) for r in rows] == [
        ("arithmetic", 0.3),
        ("arithmetic", 0.9),
        ("code", 0.3),
        ("code", 0.9),
    ]
    assert all(r.top1_agreement == 1.0 and r.kl == 0.0 for r in rows)
    maskable = {
        "arithmetic": arithmetic_inputs(dlm, 2).maskable.sum(1).tolist(),  # answer + EOS of each row
        "code": code_inputs(dlm, 2).maskable.sum(1).tolist(),  # the chunk after BOS
    }
    assert maskable["code"] == [63, 63]
    for r in rows:
        assert r.positions == sum(round(n * r.mask_ratio) for n in maskable[r.source])
    json.dumps([r.to_dict() for r in rows])


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_more_noise_on_a_linear_gives_more_kl_and_less_agreement(name: str) -> None:
    reference = dllm_sampler.load(name, dtype=torch.float32)
    kwargs = {"ratios": (0.5,), "problems": 4, "code_chunks": 2}
    small = mask_ratio_fidelity(perturbed(name, 0.05), reference, **kwargs)
    large = mask_ratio_fidelity(perturbed(name, 2.0), reference, **kwargs)
    for s, big in zip(small, large, strict=True):
        assert 0.0 < s.kl < big.kl
        assert big.top1_agreement <= s.top1_agreement
    assert min(r.top1_agreement for r in large) < 1.0


def fake_quantize_rows(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Round-to-nearest asymmetric min-max quantization per output row, dequantized."""
    lo, hi = weight.amin(1, keepdim=True), weight.amax(1, keepdim=True)
    scale = (hi - lo).clamp(min=1e-12) / (2**bits - 1)
    return ((weight - lo) / scale).round().clamp(0, 2**bits - 1) * scale + lo


def test_two_bit_weights_in_one_block_score_below_the_float_model() -> None:
    reference = dllm_sampler.load("tiny-dream", dtype=torch.float32)
    quantized = dllm_sampler.load("tiny-dream", dtype=torch.float32)
    with torch.no_grad():
        for name in quantized.topology.block(1).linear_names():
            weight = quantized.model.get_submodule(name).weight
            weight.copy_(fake_quantize_rows(weight, 2))
    rows = mask_ratio_fidelity(quantized, reference, ratios=(0.5,), problems=2, code_chunks=2)
    assert all(r.kl > 0 for r in rows)
    assert min(r.top1_agreement for r in rows) < 1.0


def test_inputs_depend_on_the_seed_and_ratio_only() -> None:
    reference, model = random_char_model("dream"), random_char_model("dream", seed=1)
    kwargs = {"problems": 2, "code_chunks": 1}
    alone = mask_ratio_fidelity(model, reference, ratios=(0.5,), **kwargs)
    among = mask_ratio_fidelity(model, reference, ratios=(0.1, 0.5), **kwargs)
    assert alone == [r for r in among if r.mask_ratio == 0.5]
    other_seed = mask_ratio_fidelity(model, reference, ratios=(0.5,), seed=1, **kwargs)
    assert [r.kl for r in other_seed] != [r.kl for r in alone]


def test_bad_arguments_name_the_problem() -> None:
    llada, dream = random_char_model("llada"), random_char_model("dream")
    small = tiny_config("llada", embedding_size=48)
    with pytest.raises(ValueError, match="different vocabularies"):
        mask_ratio_fidelity(DiffusionLM.from_config(small, seed=0), llada)
    with pytest.raises(ValueError, match=r"mask ratios in \(0, 1\]"):
        mask_ratio_fidelity(dream, dream, ratios=(0.0, 0.5))
    with pytest.raises(ValueError, match="not both 0"):
        mask_ratio_fidelity(dream, dream, problems=0, code_chunks=0)
