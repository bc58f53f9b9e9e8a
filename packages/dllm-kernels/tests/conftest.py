"""Shared test configuration for dllm_kernels.

Hypothesis profiles: ``ci`` (default: few examples, no deadline; numba compiles on first use) and
``thorough`` (select with ``HYPOTHESIS_PROFILE=thorough``). Helpers are session-scoped fixtures returning
functions, so they can be used inside ``@given`` tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest
import torch
from dllm_kernels import QuantSpec, dispatch
from hypothesis import settings

settings.register_profile("ci", max_examples=20, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def rel_fro() -> Callable[[np.ndarray, np.ndarray], float]:
    """Relative Frobenius error ``||out - ref|| / ||ref||`` computed in float64 (0 if both are zero)."""

    def _rel(out: np.ndarray, ref: np.ndarray) -> float:
        out64, ref64 = np.asarray(out, dtype=np.float64), np.asarray(ref, dtype=np.float64)
        den = np.linalg.norm(ref64)
        num = np.linalg.norm(out64 - ref64)
        return float(num / den) if den > 0 else float(num)

    return _rel


@pytest.fixture(scope="session")
def make_matrix() -> Callable[..., np.ndarray]:
    """``make_matrix(seed, rows, cols, kind="normal", magnitude=1.0)`` -> float32 test matrix.

    Kinds: ``normal`` (Gaussian times ``magnitude``), ``outliers`` (Gaussian with a few 50x entries),
    ``zero_rows`` (Gaussian with every other row zero), ``ties`` (half-integers in [-7.5, 7.5] with 7.5 in
    each row, so 4-bit symmetric scales are exactly 1 and many values sit on rounding ties), ``positive``
    (uniform in [0.5, 1.5] times ``magnitude``; no negative values).
    """

    def _make(seed: int, rows: int, cols: int, kind: str = "normal", magnitude: float = 1.0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if kind == "ties":
            x = rng.integers(-15, 16, size=(rows, cols)) / 2.0
            x[:, rng.integers(0, cols)] = 7.5
            return x.astype(np.float32)
        if kind == "positive":
            return (rng.uniform(0.5, 1.5, size=(rows, cols)) * magnitude).astype(np.float32)
        x = rng.standard_normal((rows, cols)) * magnitude
        if kind == "outliers":
            mask = rng.random((rows, cols)) < 0.02
            x[mask] *= 50.0
        elif kind == "zero_rows":
            x[::2] = 0.0
        elif kind != "normal":
            raise ValueError(f"unknown kind {kind!r}")
        return x.astype(np.float32)

    return _make


# --- Triton kernels (dllm_kernels.triton, dllm_kernels.dispatch) ---------------------------------------
# The repository-root conftest.py sets TRITON_INTERPRET=1 on machines without CUDA (before triton is
# imported) and skips `gpu`-marked tests there; these fixtures pick the device the kernels run on.


@pytest.fixture(scope="session")
def triton_device() -> str:
    """Device for Triton kernel tests: ``"cuda"`` (compiled) or ``"cpu"`` (interpreter); skip if neither."""
    if torch.cuda.is_available():
        return "cuda"
    from dllm_kernels.dispatch import triton_available

    if not triton_available():
        pytest.skip("triton is not installed")
    import dllm_kernels.triton as triton_ops

    if not triton_ops.INTERPRET:
        pytest.skip("triton was imported before TRITON_INTERPRET=1 was set; run these tests on their own")
    return "cpu"


@pytest.fixture(scope="session")
def token_counts() -> tuple[int, ...]:
    """Token counts M for kernel tests: ragged (1, 33) everywhere, plus 257 when compiled on a GPU."""
    return (1, 33, 257) if torch.cuda.is_available() else (1, 33)


@pytest.fixture(scope="session")
def quantized_weight() -> Callable[..., tuple]:
    """``quantized_weight(n, k, bits, symmetric, group, seed)`` -> ``(codes, scale, zero, packed, spec)``: a
    random ``[n, k]`` weight (Gaussian rows of random magnitudes) quantized by the Numba reference with
    ``group`` columns per scale (None: per channel), and its codes packed."""

    def _weight(n: int, k: int, bits: int, symmetric: bool, group: int | None, seed: int) -> tuple:
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(n, k, generator=g) * torch.rand(n, 1, generator=g)
        spec = QuantSpec(bits, symmetric, "group" if group else "channel", group)
        codes, scale, zero = dispatch.quantize(w, spec, backend="numba")
        return codes, scale, zero, dispatch.pack(codes, bits, backend="numba"), spec

    return _weight
