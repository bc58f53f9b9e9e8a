"""Shared test setup for dllm_weightquant.

Hypothesis profiles: ``ci`` (default: few examples, no deadline) and ``thorough``
(``HYPOTHESIS_PROFILE=thorough``). Tests run single-threaded (per test module, restored afterwards):
GPTQ's column loop is made of many tiny torch ops, which intra-op threading only slows down on a shared
2-core machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import torch
from dllm_sampler import DiffusionLM, tiny_config
from hypothesis import settings

settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_layer(
    out: int, inp: int, seed: int, tokens: int | None = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random layer: weight ``[out, in]``, correlated inputs ``X [tokens, in]`` with a few outlier
    channels, and ``H = X^T X / tokens`` (float64)."""
    g = torch.Generator().manual_seed(seed)
    tokens = tokens or 4 * inp
    w = torch.randn(out, inp, generator=g, dtype=torch.float64)
    mix = torch.randn(inp, inp, generator=g, dtype=torch.float64) / inp**0.5
    x = torch.randn(tokens, inp, generator=g, dtype=torch.float64) @ (
        torch.eye(inp, dtype=torch.float64) + mix
    )
    x[:, torch.randperm(inp, generator=g)[: max(1, inp // 16)]] *= 8.0
    h = x.T @ x / tokens
    return w.to(dtype), x.to(dtype), h


@pytest.fixture(scope="session")
def layer() -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``layer(out, in, seed, tokens=None, dtype=float32) -> (W, X, H)``; see ``make_layer``."""
    return make_layer


@pytest.fixture(scope="session")
def tiny_dlm() -> Callable[[str], DiffusionLM]:
    """``tiny_dlm(arch)``: a freshly initialised tiny LLaDA ("llada") or Dream ("dream", GQA) model."""

    def build(arch: str = "llada") -> DiffusionLM:
        return DiffusionLM.from_config(tiny_config(arch), seed=0)

    return build
