"""Shared test configuration for dllm_sampler.

Hypothesis profiles: ``ci`` (default: few examples, no deadline) and ``thorough``
(select with ``HYPOTHESIS_PROFILE=thorough``).
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=400, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# ---------------------------------------------------------------------------------------------------------
# Samplers and likelihood: fake mask predictors (no trained weights needed)
# ---------------------------------------------------------------------------------------------------------


class FakeMaskPredictor:
    """A tiny deterministic bidirectional mask predictor that duck-types ``dllm_sampler.MaskPredictor``.

    One single-head attention layer over a fixed random embedding, computed in float64 and returned as
    float32 logits ``[B, L, V]``. It honours ``attention_mask`` like a real model: padded keys are ignored and
    positions are ``cumsum(attention_mask) - 1``, so a left-padded row gives the same logits on its real
    tokens as the same row alone. The mask token's own logit is pinned very low (a trained model never
    predicts it).
    Every call is recorded in ``calls`` as ``(input_ids, attention_mask)`` clones.
    """

    def __init__(
        self, vocab_size: int = 24, dim: int = 16, max_len: int = 256, seed: int = 0, arch: str = "llada"
    ):
        g = torch.Generator().manual_seed(seed)
        self.vocab_size = vocab_size
        self.arch = arch
        self.mask_token_id = vocab_size - 1
        self.eos_token_id = vocab_size - 2
        self.pad_token_id = vocab_size - 3
        self.eot_token_id = vocab_size - 4
        self.emb = torch.randn(vocab_size, dim, generator=g, dtype=torch.float64)
        self.pos = 0.5 * torch.randn(max_len, dim, generator=g, dtype=torch.float64)
        self.wq, self.wk, self.wv = (
            torch.randn(dim, dim, generator=g, dtype=torch.float64) / math.sqrt(dim) for _ in range(3)
        )
        self.out = 3.0 * torch.randn(dim, vocab_size, generator=g, dtype=torch.float64) / math.sqrt(dim)
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append((input_ids.clone(), None if attention_mask is None else attention_mask.clone()))
        b, l = input_ids.shape
        if attention_mask is None:
            keep = torch.ones(b, l, dtype=torch.bool)
            pos = torch.arange(l).expand(b, l)
        else:
            keep = attention_mask.bool()
            pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        h = self.emb[input_ids] + self.pos[pos]
        scores = (h @ self.wq) @ (h @ self.wk).transpose(1, 2) / math.sqrt(h.shape[-1])
        scores = scores.masked_fill(~keep[:, None, :], float("-inf"))
        ctx = torch.softmax(scores, dim=-1) @ (h @ self.wv)
        logits = torch.tanh(h + ctx) @ self.out
        logits[..., self.mask_token_id] = -1e4
        return logits.float()


class OracleModel:
    """Puts (almost) all probability on the true token of ``sequence`` at each position, for any input."""

    def __init__(
        self, sequence: torch.Tensor, vocab_size: int = 24, arch: str = "llada", margin: float = 60.0
    ):
        self.arch = arch
        self.mask_token_id = vocab_size - 1
        self.eos_token_id = vocab_size - 2
        self.pad_token_id = vocab_size - 3
        self.table = margin * torch.nn.functional.one_hot(sequence.long(), vocab_size).float()
        self.calls: list[torch.Tensor] = []

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(input_ids.clone())
        return self.table[: input_ids.shape[1]].expand(input_ids.shape[0], -1, -1).clone()


class UniformModel:
    """Returns all-zero logits: every token has probability 1/V, so each masked position costs log V nats."""

    def __init__(self, vocab_size: int = 24, arch: str = "llada"):
        self.arch = arch
        self.vocab_size = vocab_size
        self.mask_token_id = vocab_size - 1
        self.eos_token_id = vocab_size - 2
        self.pad_token_id = vocab_size - 3
        self.calls: list[torch.Tensor] = []

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(input_ids.clone())
        return torch.zeros(*input_ids.shape, self.vocab_size)


@pytest.fixture
def fake_model() -> FakeMaskPredictor:
    """A fresh LLaDA-flavoured fake mask predictor (vocab 24, mask id 23, eos 22, pad 21, eot 20)."""
    return FakeMaskPredictor()


@pytest.fixture
def fake_model_cls() -> type[FakeMaskPredictor]:
    """The fake mask predictor class, for tests that need another seed or ``arch``."""
    return FakeMaskPredictor


@pytest.fixture
def oracle_model_cls() -> type[OracleModel]:
    """The oracle model class (probability ~1 on a given true sequence)."""
    return OracleModel


@pytest.fixture
def uniform_model_cls() -> type[UniformModel]:
    """The uniform model class (all-zero logits)."""
    return UniformModel
