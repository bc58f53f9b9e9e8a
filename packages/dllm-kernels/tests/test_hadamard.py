"""Hadamard matrices (Sylvester and Paley constructions) and the fast transform."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from dllm_kernels import reference as ref
from dllm_kernels.reference.hadamard_matrix import hadamard_base, paley_matrix
from hypothesis import given
from hypothesis import strategies as st

SMALL_SIZES = [1, 2, 4, 8, 16, 64, 256, 12, 24, 48, 96, 20, 40, 28, 56, 36, 44, 148, 296, 768]


@pytest.mark.parametrize("m", [12, 20, 28, 36, 44, 60, 68, 76, 148])
def test_paley_bases_are_hadamard(m: int) -> None:
    h = paley_matrix(m)
    assert set(np.unique(h)) == {-1, 1}
    np.testing.assert_array_equal(h @ h.T, m * np.eye(m, dtype=np.int64))


@pytest.mark.parametrize("k", range(0, 9))
def test_powers_of_two_equal_scipy(k: int) -> None:
    n = 2**k
    np.testing.assert_array_equal(ref.hadamard_matrix(n), scipy.linalg.hadamard(n) / np.sqrt(n))


@pytest.mark.parametrize("n", SMALL_SIZES)
def test_matrix_is_orthonormal_with_equal_magnitudes(n: int) -> None:
    h = ref.hadamard_matrix(n)
    assert h.shape == (n, n) and h.dtype == np.float64
    np.testing.assert_allclose(np.abs(h), 1 / np.sqrt(n), rtol=1e-15)
    np.testing.assert_allclose(h @ h.T, np.eye(n), atol=1e-12)


@pytest.mark.parametrize(
    ("n", "base"),
    [(64, 1), (128, 1), (4096, 1), (768, 12), (1536, 12), (12288, 12), (3584, 28), (18944, 148)],
)
def test_model_sizes_are_supported(n: int, base: int) -> None:
    assert ref.supported_hadamard_size(n)
    assert hadamard_base(n) == base


@given(st.sampled_from(SMALL_SIZES), st.integers(1, 5), st.integers(0, 2**31), st.booleans())
def test_transform_equals_matmul(n: int, rows: int, seed: int, f64: bool) -> None:
    x = np.random.default_rng(seed).standard_normal((rows, n)).astype(np.float64 if f64 else np.float32)
    out = ref.hadamard_transform(x)
    assert out.dtype == x.dtype and out.shape == x.shape
    expected = x.astype(np.float64) @ ref.hadamard_matrix(n)
    np.testing.assert_allclose(out, expected, rtol=0, atol=(1e-12 if f64 else 1e-5) * max(1.0, np.sqrt(n)))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)


@pytest.mark.parametrize("n", [3584, 12288, 18944])
def test_large_model_sizes_via_kronecker_factors(n: int) -> None:
    """x @ kron(P, S) / sqrt(n) == P^T X S / sqrt(n), row viewed as X [m, p] (no dense n x n matrix)."""
    m = hadamard_base(n)
    p = n // m
    x = np.random.default_rng(n).standard_normal((2, n))
    out = ref.hadamard_transform(x)
    s = scipy.linalg.hadamard(p).astype(np.float64)
    expected = np.stack([paley_matrix(m).T @ row.reshape(m, p) @ s for row in x]).reshape(2, n) / np.sqrt(n)
    np.testing.assert_allclose(out, expected, atol=1e-10)


def test_leading_dims_and_half_precision() -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 48)).astype(np.float16)
    out = ref.hadamard_transform(x)
    assert out.shape == (2, 3, 48) and out.dtype == np.float32
    np.testing.assert_allclose(out, x.astype(np.float64) @ ref.hadamard_matrix(48), atol=1e-5)


@pytest.mark.parametrize("n", [0, 3, 6, 7, 10, 100, -4])
def test_unsupported_sizes_raise(n: int) -> None:
    assert not ref.supported_hadamard_size(n)
    with pytest.raises(ValueError, match="supported sizes are powers of two"):
        ref.hadamard_matrix(n)
    if n > 0:
        with pytest.raises(ValueError, match="12\\*1024"):
            ref.hadamard_transform(np.zeros((1, n), np.float32))


def test_transform_bad_input() -> None:
    with pytest.raises(ValueError, match="float16/32/64 numpy array"):
        ref.hadamard_transform(np.zeros((2, 8), np.int32))
    with pytest.raises(ValueError, match="at least one dimension"):
        ref.hadamard_transform(np.array(1.0, dtype=np.float32))


@given(st.integers(0, 2**31), st.sampled_from([4, 8]), st.booleans())
def test_hadamard_quantize_per_token_is_the_composition(seed: int, bits: int, symmetric: bool) -> None:
    x = np.random.default_rng(seed).standard_normal((5, 96)).astype(np.float32)
    x[:, 3] *= 40.0  # an outlier channel, which the rotation spreads out
    fused = ref.hadamard_quantize_per_token(x, bits, symmetric)
    composed = ref.quantize_per_token(ref.hadamard_transform(x), bits, symmetric)
    for a, b in zip(fused, composed, strict=True):
        np.testing.assert_array_equal(a, b)
