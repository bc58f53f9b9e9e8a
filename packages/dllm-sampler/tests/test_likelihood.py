"""Monte-Carlo ELBO likelihood estimators (LLaDA stratified counts, Dream stratified times)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from dllm_sampler import (
    dream_likelihood_noise,
    elbo_nll_per_token,
    llada_likelihood_noise,
    llada_mask_counts,
    log_likelihood,
)
from hypothesis import given
from hypothesis import strategies as st

V = 24
MASK = V - 1


@given(data=st.data(), target_len=st.integers(1, 200), batch=st.integers(1, 64))
def test_llada_counts_are_stratified(data, target_len, batch):
    k = data.draw(st.integers(1, target_len))
    counts = llada_mask_counts(k, target_len, batch)
    exact = [k + Fraction(j * target_len, batch) for j in range(batch)]
    expected = [(round(value) - 1) % target_len + 1 for value in exact]  # Fraction rounds half to even
    assert counts.tolist() == expected
    assert counts.min() >= 1 and counts.max() <= target_len
    assert counts[0] == k
    if batch == target_len:  # one row per possible count
        assert sorted(counts.tolist()) == list(range(1, target_len + 1))


def test_llada_counts_reject_bad_k():
    with pytest.raises(ValueError, match="k must be in"):
        llada_mask_counts(0, 5, 2)


@pytest.mark.parametrize(("prefix_len", "target_len", "b"), [(3, 9, 4), (0, 5, 5), (6, 1, 3), (2, 17, 8)])
def test_llada_noise_masks_exact_counts_of_target_positions(prefix_len, target_len, b):
    seq = torch.randint(0, MASK, (1, prefix_len + target_len)).repeat(b, 1)
    for seed in range(5):
        noisy, masked, p_mask = llada_likelihood_noise(
            seq, prefix_len, MASK, torch.Generator().manual_seed(seed)
        )
        counts = masked.sum(dim=1)
        assert not masked[:, :prefix_len].any()
        assert torch.equal(noisy, seq.masked_fill(masked, MASK))
        assert torch.allclose(p_mask.squeeze(1), counts.float() / target_len)
        matches = [
            k for k in range(1, target_len + 1) if torch.equal(counts, llada_mask_counts(k, target_len, b))
        ]
        assert matches, counts


def test_llada_noise_positions_are_uniform():
    seq = torch.zeros(1, 10, dtype=torch.long).repeat(2000, 1)
    _, masked, p_mask = llada_likelihood_noise(seq, 2, MASK, torch.Generator().manual_seed(0))
    # Within each row exactly counts positions; across rows every target position is equally likely.
    per_position = masked[:, 2:].float().mean(dim=0)
    expected = p_mask.mean()
    assert (per_position - expected).abs().max() < 0.05


def test_dream_noise_times_are_stratified_and_ends_kept():
    b, l = 16, 400
    seq = torch.zeros(b, l, dtype=torch.long)
    _, masked, p_mask = dream_likelihood_noise(seq, 5, MASK, generator=torch.Generator().manual_seed(0))
    t = ((p_mask.squeeze(1) - 1e-3) / (1 - 1e-3)).double()
    gaps = torch.diff(t.sort().values)
    assert torch.allclose(gaps, torch.full_like(gaps, 1 / b), atol=1e-5)
    assert not masked[:, :5].any() and not masked[:, -1].any()
    rates = masked[:, 5:-1].float().mean(dim=1)
    p = p_mask.squeeze(1)
    assert ((rates - p).abs() <= 5 * torch.sqrt(p * (1 - p) / (l - 6)) + 1e-3).all()
    _, masked, _ = dream_likelihood_noise(torch.zeros(64, 8, dtype=torch.long), 0, MASK)
    assert not masked[:, 0].any() and not masked[:, -1].any()


@pytest.mark.parametrize("estimator", ["llada", "dream"])
def test_oracle_model_has_zero_nll(oracle_model_cls, estimator):
    seq = torch.randint(0, MASK, (12,), generator=torch.Generator().manual_seed(0))
    model = oracle_model_cls(seq, V)
    ll = log_likelihood(model, seq[:4], seq[4:], mc_num=16, batch_size=8, estimator=estimator)
    assert -1e-6 < ll <= 0.0
    assert len(model.calls) == 2 and model.calls[0].shape == (8, 12)


@pytest.mark.parametrize(("mc_num", "batch_size"), [(8, 8), (12, 4), (1, 32)])
def test_llada_estimator_is_exact_for_a_uniform_model(uniform_model_cls, mc_num, batch_size):
    # Each row masks c positions with p_mask = c / Lt: sum of c * log V / (c / Lt) = Lt log V, for every row.
    model = uniform_model_cls(V)
    target = torch.randint(0, MASK, (9,))
    ll = log_likelihood(model, torch.tensor([1, 2, 3]), target, mc_num=mc_num, batch_size=batch_size)
    assert ll == pytest.approx(-9 * math.log(V), rel=1e-6)
    assert len(model.calls) == mc_num // min(mc_num, batch_size)


@pytest.mark.parametrize(("prefix_len", "scored"), [(3, 8), (0, 7)])
def test_dream_estimator_is_unbiased_for_a_uniform_model(uniform_model_cls, prefix_len, scored):
    # Target of 9 tokens; the last position (and position 0 without a prefix) is never masked.
    model = uniform_model_cls(V, arch="dream")
    seq = torch.randint(0, MASK, (prefix_len + 9,))
    ll = log_likelihood(model, seq[:prefix_len], seq[prefix_len:], mc_num=4096, batch_size=512)
    expected = -scored * math.log(V)
    # Per row: sum over positions of Bernoulli(p)/p log V; its variance is about scored * E[1/p] (log V)^2.
    std = math.sqrt(scored * math.log(1 / 1e-3) / 4096) * math.log(V)
    assert abs(ll - expected) <= 6 * std
    for ids in model.calls:
        masked = ids == MASK
        assert not masked[:, :prefix_len].any() and not masked[:, -1].any() and not masked[:, 0].any()


def test_estimator_defaults_to_model_arch(uniform_model_cls):
    target = torch.randint(0, MASK, (6,))
    prefix = torch.tensor([1, 2])
    dream = uniform_model_cls(V, arch="dream")
    a = log_likelihood(dream, prefix, target, 32, 32, generator=torch.Generator().manual_seed(0))
    b = log_likelihood(dream, prefix, target, 32, 32, "dream", torch.Generator().manual_seed(0))
    assert a == b
    llada = log_likelihood(uniform_model_cls(V), prefix, target, 32, 32)
    assert llada == pytest.approx(-6 * math.log(V), rel=1e-6)
    with pytest.raises(ValueError, match="unknown model arch 'gpt'"):
        log_likelihood(uniform_model_cls(V, arch="gpt"), prefix, target, 8, 8)
    with pytest.raises(ValueError, match='estimator must be "llada" or "dream"'):
        log_likelihood(uniform_model_cls(V), prefix, target, 8, 8, "gpt")  # type: ignore[arg-type]


def test_likelihood_input_errors(uniform_model_cls):
    model = uniform_model_cls(V)
    with pytest.raises(ValueError, match="multiple of batch_size"):
        log_likelihood(model, torch.tensor([1]), torch.tensor([2, 3]), mc_num=12, batch_size=8)
    with pytest.raises(ValueError, match="empty"):
        log_likelihood(model, torch.tensor([1]), torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="1-D"):
        log_likelihood(model, torch.tensor([[1]]), torch.tensor([2]))


def test_cfg_masks_the_prefix_in_the_unconditional_half(uniform_model_cls):
    model = uniform_model_cls(V)
    ll = log_likelihood(model, torch.tensor([1, 2, 3]), torch.tensor([4, 5]), 4, 4, cfg_scale=2.0)
    assert ll == pytest.approx(-2 * math.log(V), rel=1e-6)  # un == cond for a uniform model
    (ids,) = model.calls
    cond, un = ids.chunk(2)
    assert (un[:, :3] == MASK).all() and torch.equal(cond[:, :3], torch.tensor([[1, 2, 3]]).expand(4, 3))
    assert torch.equal(un[:, 3:], cond[:, 3:])


def test_elbo_nll_per_token(uniform_model_cls, oracle_model_cls):
    model = uniform_model_cls(V)
    seqs = [torch.randint(0, MASK, (n,)) for n in (4, 7, 1)]
    assert elbo_nll_per_token(model, seqs, mc_num=8, batch_size=8) == pytest.approx(math.log(V), rel=1e-6)
    got = elbo_nll_per_token(model, torch.randint(0, MASK, (3, 6)), mc_num=4, prefix_lengths=[2, 0, 5])
    assert got == pytest.approx(math.log(V), rel=1e-6)
    seq = torch.randint(0, MASK, (10,))
    assert elbo_nll_per_token(oracle_model_cls(seq, V), [seq], mc_num=8) < 1e-6
    with pytest.raises(ValueError, match="prefix length"):
        elbo_nll_per_token(model, seqs, prefix_lengths=[0, 7, 0])
    with pytest.raises(ValueError, match="prefix_lengths"):
        elbo_nll_per_token(model, seqs, prefix_lengths=[0])
