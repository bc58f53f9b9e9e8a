"""Samplers and estimators on the package's own (tiny, random) LLaDA and Dream models via `DiffusionLM`."""

from __future__ import annotations

import math

import pytest
import torch
from dllm_sampler import (
    DreamGenerationConfig,
    LLaDAGenerationConfig,
    MaskPredictor,
    generate,
    log_likelihood,
    tiny_config,
)
from dllm_sampler.adapter import DiffusionLM


@pytest.fixture(scope="module", params=["llada", "dream"])
def tiny_dlm(request) -> DiffusionLM:
    return DiffusionLM.from_config(tiny_config(request.param), seed=0, dtype=torch.float64)


def test_adapter_satisfies_the_protocol(tiny_dlm):
    assert isinstance(tiny_dlm, MaskPredictor)


def test_left_padded_generation_matches_rows_alone(tiny_dlm):
    long_row, short_row = torch.tensor([[3, 7, 1, 9, 4, 2]]), torch.tensor([[5, 8, 6]])
    prompt = torch.cat([long_row, torch.cat([torch.full((1, 3), tiny_dlm.pad_token_id), short_row], dim=1)])
    attn = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1]])
    if tiny_dlm.arch == "llada":
        cfg = LLaDAGenerationConfig(steps=8, gen_length=16, block_length=4)
    else:
        cfg = DreamGenerationConfig(max_new_tokens=16, steps=8)
    out = generate(tiny_dlm, prompt, attn, cfg)
    assert out.shape == (2, 22)
    assert not (out == tiny_dlm.mask_token_id).any()
    assert torch.equal(out[0], generate(tiny_dlm, long_row, None, cfg)[0])
    assert torch.equal(out[1, 3:], generate(tiny_dlm, short_row, None, cfg)[0])


def test_log_likelihood_is_a_finite_negative_number(tiny_dlm):
    g = torch.Generator().manual_seed(0)
    ll = log_likelihood(tiny_dlm, torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6, 7]), 8, 8, generator=g)
    # A random-init model is close to uniform: about (scored tokens) * log V nats.
    assert math.isfinite(ll) and -8 * math.log(tiny_dlm.vocab_size) < ll < 0
