"""Shared fixtures of the dllm_actquant tests: random tiny LLaDA (MHA) and Dream (GQA) models.

Hypothesis profiles: ``ci`` (default: few examples, no deadline) and ``thorough``
(select with ``HYPOTHESIS_PROFILE=thorough``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import pytest
import torch
from dllm_sampler import DiffusionLM, DreamConfig, LLaDAConfig
from hypothesis import settings

settings.register_profile("ci", max_examples=6, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The tiny matmuls here are dominated by thread hand-off on a shared 2-core machine; one thread is ~30x
# faster.
torch.set_num_threads(1)

VOCAB = 96


def tiny_config(
    arch: str, hidden: int, heads: int, kv_heads: int, mlp: int, layers: int
) -> LLaDAConfig | DreamConfig:
    ids = {"mask_token_id": VOCAB - 1, "eos_token_id": VOCAB - 2, "pad_token_id": VOCAB - 2}
    if arch == "llada":
        return LLaDAConfig(
            d_model=hidden,
            n_layers=layers,
            n_heads=heads,
            n_kv_heads=heads,
            mlp_hidden_size=mlp,
            vocab_size=VOCAB,
            embedding_size=VOCAB,
            max_sequence_length=128,
            rope_theta=10000.0,
            **ids,
        )
    return DreamConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=mlp,
        vocab_size=VOCAB,
        max_position_embeddings=128,
        rope_theta=10000.0,
        bos_token_id=VOCAB - 3,
        **ids,
    )


def build_model(
    arch: str,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    hidden: int = 128,
    heads: int = 4,
    kv_heads: int = 2,
    mlp: int = 384,
    layers: int = 2,
) -> DiffusionLM:
    """A random tiny model with non-trivial norm gains and biases (so every fold is exercised).

    Default widths: hidden 128 (2^7), head dim 32, MLP 384 = 12 * 32 (a Kronecker Hadamard order).
    """
    dlm = DiffusionLM.from_config(
        tiny_config(arch, hidden, heads, kv_heads, mlp, layers), seed=seed, dtype=dtype
    )
    randomize_parameters(dlm, seed + 1000)
    return dlm


def randomize_parameters(dlm: DiffusionLM, seed: int) -> None:
    """Random weights ``N(0, 1/in)``, embeddings ``N(0, 1)``, biases ``N(0, 0.01)`` and RMSNorm gains in
    [0.75, 1.25], in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in dlm.model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:  # RMSNorm gains
                p.copy_(1.0 + 0.5 * torch.rand(p.shape, generator=g) - 0.25)
            elif "wte" in name or "embed" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def inject_outliers(dlm: DiffusionLM, channels: int = 4, factor: float = 30.0, seed: int = 0) -> None:
    """Make a few channels of every block's attention-norm output and MLP width massive outliers.

    Scales some attn_norm / mlp_norm gains and some up-projection rows by ``factor``: the inputs of q/k/v,
    gate/up and down then carry a few channels far larger than the rest (like the massive outliers QDLM
    reports at LLaDA's ff_out input).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in dlm.topology:
            for norm in (b.attn_norm, b.mlp_norm):
                idx = torch.randperm(norm.weight.shape[0], generator=g)[:channels]
                norm.weight[idx] *= factor
            idx = torch.randperm(b.up_proj.weight.shape[0], generator=g)[:channels]
            b.up_proj.weight[idx] *= factor


def random_batches(n: int = 4, batch: int = 2, length: int = 24, seed: int = 0) -> list[torch.Tensor]:
    """Random token batches ``[batch, length]`` (with some mask tokens) for calibration and comparisons."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB - 3, (batch, length), generator=g)
        ids[torch.rand(batch, length, generator=g) < 0.3] = VOCAB - 1
        out.append(ids)
    return out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float64."""
    a, b = a.detach().to(torch.float64), b.detach().to(torch.float64)
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="session")
def make_model() -> Callable[..., DiffusionLM]:
    return build_model


@pytest.fixture(scope="session")
def randomize() -> Callable[[DiffusionLM, int], None]:
    return randomize_parameters


@pytest.fixture(scope="session")
def outliers() -> Callable[..., None]:
    return inject_outliers


@pytest.fixture(scope="session")
def batches() -> Callable[..., list[torch.Tensor]]:
    return random_batches


@pytest.fixture(scope="session")
def relerr() -> Callable[[torch.Tensor, torch.Tensor], float]:
    return rel_err
