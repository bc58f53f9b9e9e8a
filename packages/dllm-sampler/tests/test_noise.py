"""LLaDA's forward process and loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from dllm_sampler import forward_noise, llada_loss
from hypothesis import given
from hypothesis import strategies as st

MASK = 99


@given(
    b=st.integers(1, 8),
    l=st.integers(1, 300),
    t=st.floats(0.0, 1.0),
    eps=st.sampled_from([0.0, 1e-3, 0.1]),
    prompt_frac=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**31 - 1),
)
def test_masking_rate_matches_p_mask_and_prompt_is_kept(b, l, t, eps, prompt_frac, seed):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 50, (b, l), generator=g)
    prompt_mask = torch.arange(l).expand(b, l) < int(prompt_frac * l)
    noisy, masked, p_mask = forward_noise(x0, t, MASK, prompt_mask=prompt_mask, eps=eps, generator=g)
    p = (1 - eps) * t + eps
    assert p_mask.shape == (b, 1)
    assert torch.allclose(p_mask, torch.full((b, 1), p), atol=1e-6)
    assert not (masked & prompt_mask).any()
    assert torch.equal(noisy, torch.where(masked, torch.full_like(x0, MASK), x0))
    n = int((~prompt_mask).sum())
    count = int(masked.sum())
    assert abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1


def test_per_sequence_t_and_extremes():
    x0 = torch.randint(0, 50, (3, 2000), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 0.5, 1.0])
    _, masked, p_mask = forward_noise(x0, t, MASK, eps=0.0, generator=torch.Generator().manual_seed(1))
    assert p_mask.squeeze(1).tolist() == [0.0, 0.5, 1.0]
    assert masked[0].sum() == 0 and masked[2].all()
    assert abs(int(masked[1].sum()) - 1000) <= 5 * math.sqrt(500)
    # [B, 1] t and an [L] prompt mask broadcast.
    prompt = torch.arange(2000) < 10
    _, masked, _ = forward_noise(x0, t[:, None], MASK, prompt_mask=prompt, eps=0.0)
    assert not masked[:, :10].any() and masked[2, 10:].all()


def test_forward_noise_rejects_bad_inputs():
    x0 = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="one value per sequence"):
        forward_noise(x0, torch.rand(3), MASK)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        forward_noise(x0, 1.5, MASK)
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        forward_noise(x0[0], 0.5, MASK)


def _setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, l, v = 3, 10, 7
    x0 = torch.randint(0, v, (b, l), generator=g)
    logits = torch.randn(b, l, v, generator=g)
    prompt = torch.arange(l).expand(b, l) < torch.tensor([[2], [4], [9]])
    _, masked, p_mask = forward_noise(
        x0, torch.tensor([0.3, 0.6, 0.9]), MASK, prompt_mask=prompt, generator=g
    )
    return x0, logits, masked, p_mask, prompt


def test_llada_loss_pretraining_normalization():
    x0, logits, masked, p_mask, _ = _setup()
    b, l = x0.shape
    expected = 0.0
    for i in range(b):
        for j in range(l):
            if masked[i, j]:
                expected += float(F.cross_entropy(logits[i, j][None], x0[i, j][None])) / float(p_mask[i, 0])
    assert llada_loss(logits, x0, masked, p_mask).item() == pytest.approx(expected / (b * l), rel=1e-5)


def test_llada_loss_sft_normalization_per_answer_length():
    x0, logits, masked, p_mask, prompt = _setup(1)
    b, l = x0.shape
    expected = 0.0
    for i in range(b):
        answer_len = int((~prompt[i]).sum())
        for j in range(l):
            if masked[i, j]:
                ce = float(F.cross_entropy(logits[i, j][None], x0[i, j][None]))
                expected += ce / float(p_mask[i, 0]) / answer_len
    got = llada_loss(logits, x0, masked, p_mask, normalize="answer", prompt_mask=prompt)
    assert got.item() == pytest.approx(expected / b, rel=1e-5)
    with pytest.raises(ValueError, match="prompt_mask"):
        llada_loss(logits, x0, masked, p_mask, normalize="answer")
    with pytest.raises(ValueError, match="normalize"):
        llada_loss(logits, x0, masked, p_mask, normalize="batch")


def test_llada_loss_is_unbiased_for_a_uniform_model():
    # With logits 0 every masked token costs log V; E[sum masked / p_mask] = L log V for any t.
    v, b, l = 11, 4000, 16
    x0 = torch.randint(0, v, (b, l), generator=torch.Generator().manual_seed(0))
    t = torch.rand(b, generator=torch.Generator().manual_seed(1))
    _, masked, p_mask = forward_noise(x0, t, MASK, eps=0.05, generator=torch.Generator().manual_seed(2))
    loss = llada_loss(torch.zeros(b, l, v), x0, masked, p_mask).item()
    assert loss == pytest.approx(math.log(v), rel=0.05)
