"""Shared fixtures of the dllm_calib tests.

Hypothesis profiles: ``ci`` (default: few examples, no deadline) and ``thorough``
(select with ``HYPOTHESIS_PROFILE=thorough``).

Models: small randomly initialised LLaDA and Dream models (``dllm_sampler.DiffusionLM.from_config``) with a
character-level ``encode``, plus ``CharModel``, a model-free stand-in for the builders (tokenizer and mask
token only).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import torch
from dllm_calib import CalibrationSet, CalibrationState, Provenance
from dllm_sampler import DiffusionLM, DreamConfig, LLaDAConfig
from hypothesis import settings

settings.register_profile("ci", max_examples=10, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """One intra-op thread: the models are tiny, and several threads on a shared 2-core machine are ~50x "
    "slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


VOCAB = 128
MASK, EOS, PAD, BOS = 127, 126, 125, 124


def char_ids(text: str) -> list[int]:
    """Character-level ids in [4, 124): never a special token."""
    return [4 + ord(c) % 120 for c in text]


class CharModel:
    """What the window builders need: ``encode``, ``mask_token_id`` and ``eos_token_id``."""

    arch = "llada"

    def __init__(self, mask_token_id: int | None = MASK) -> None:
        self.mask_token_id = mask_token_id
        self.eos_token_id = EOS

    def encode(self, text: str) -> list[int]:
        return char_ids(text)


class CharLLaDA(DiffusionLM):
    """A real (small, random) DiffusionLM with a character-level tokenizer."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return char_ids(text)


def small_llada(seed: int = 0) -> CharLLaDA:
    config = LLaDAConfig(
        d_model=32,
        n_layers=2,
        n_heads=4,
        mlp_hidden_size=48,
        vocab_size=VOCAB,
        max_sequence_length=256,
        mask_token_id=MASK,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    return CharLLaDA.from_config(config, seed=seed).to(torch.float32)


def small_dream(seed: int = 0) -> CharLLaDA:
    config = DreamConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        vocab_size=VOCAB,
        mask_token_id=MASK,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    model = CharLLaDA.from_config(config, seed=seed).to(torch.float32)
    with torch.no_grad():  # give the zero-initialised q/k/v biases some value, so they are exercised
        for name, p in model.model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return model


@pytest.fixture(scope="session")
def llada() -> CharLLaDA:
    return small_llada()


@pytest.fixture(scope="session")
def dream() -> CharLLaDA:
    return small_dream()


@pytest.fixture
def fresh_llada() -> CharLLaDA:
    """A private model a test may modify."""
    return small_llada()


@pytest.fixture(scope="session")
def char_model() -> CharModel:
    return CharModel()


def rotate_half_rope(theta: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple]:
    """A RoPE written from LLaDA/Dream's formula (rotate_half layout), independent of the model code."""

    def rope(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dh = q.shape[-1]
        inv = 1.0 / theta ** (torch.arange(0, dh, 2, dtype=torch.float64) / dh)
        ang = positions.double()[..., None] * inv
        cos = torch.cat([ang.cos(), ang.cos()], -1)[:, None]
        sin = torch.cat([ang.sin(), ang.sin()], -1)[:, None]

        def rot(x: torch.Tensor) -> torch.Tensor:
            x1, x2 = x.double().chunk(2, -1)
            return (x.double() * cos + torch.cat([-x2, x1], -1) * sin).float()

        return rot(q), rot(k)

    return rope


@pytest.fixture(scope="session")
def rope_for() -> Callable[[DiffusionLM], Callable]:
    return lambda model: rotate_half_rope(model.config.dims().rope_theta)


def random_set(
    n: int,
    lengths: tuple[int, int] = (6, 14),
    mask_prob: float = 0.4,
    seed: int = 0,
    pad_tail: bool = True,
    confidence: bool = True,
) -> CalibrationSet:
    """``n`` states of random lengths with random masks, confidences and (optionally) trailing padding."""
    g = torch.Generator().manual_seed(seed)
    states = []
    for i in range(n):
        length = int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=g))
        ids = torch.randint(4, 120, (length,), generator=g)
        attn = torch.ones(length, dtype=torch.bool)
        if pad_tail and i % 3 == 1:
            attn[-2:] = False
        masked = (torch.rand(length, generator=g) < mask_prob) & attn
        ids = torch.where(masked, torch.tensor(MASK), ids)
        ids = torch.where(attn, ids, torch.tensor(PAD))
        conf = torch.rand(length, generator=g) * attn if confidence else None
        states.append(
            CalibrationState(
                input_ids=ids,
                attention_mask=attn,
                is_masked=masked,
                mask_ratio=float(masked[attn].float().mean()),
                t=float(masked[attn].float().mean()),
                confidence=conf,
                step=i,
                source_index=i,
            )
        )
    return CalibrationSet(tuple(states), Provenance(builder="test", params={"n": n}, seed=seed), MASK)


@pytest.fixture(scope="session")
def make_set() -> Callable[..., CalibrationSet]:
    return random_set
