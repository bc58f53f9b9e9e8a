"""Quantized GEMMs against float64 numpy references built from the same integer codes.

Error bands (relative Frobenius norm vs float64):
* wna16_gemm: <= 1e-6 (float64 accumulation of float32-dequantized weights; one float32 rounding of the
  result, ~6e-8 per element).
* int8 / w4a8 / w4a4: the integer accumulator is exact (checked with unit scales against an int64 matmul),
  the float32 epilogue ``(float32(acc) * x_scale) * w_scale`` is bit-exact, and <= 1e-6 vs float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from dllm_kernels import QuantSpec
from dllm_kernels import reference as ref
from hypothesis import given
from hypothesis import strategies as st

WNA16_BAND = 1e-6
INT_BAND = 1e-6


def decode_packed(packed: np.ndarray, bits: int, k: int) -> np.ndarray:
    """Stored unsigned values of a pack-quantized array, via unpack (int64 [rows, k])."""
    return ref.unpack(packed, bits, k, symmetric=False).astype(np.int64)


@given(
    st.integers(0, 2**31),
    st.integers(1, 33),
    st.integers(1, 24),
    st.integers(1, 4),
    st.sampled_from([2, 3, 4, 8]),
    st.booleans(),
    st.sampled_from([8, 16, 32, None]),
)
def test_wna16_matches_float64_reference(
    make_matrix, rel_fro, seed, m, n, k_groups, bits, symmetric, group
) -> None:
    k = (group or 24) * k_groups
    x = make_matrix(seed, m, k)
    w = make_matrix(seed + 1, n, k, "outliers")
    gran = "group" if group else "channel"
    spec = QuantSpec(bits, symmetric, gran, group)
    codes, scale, zero = ref.quantize(w, spec)
    packed = ref.pack(codes, bits)
    out = ref.wna16_gemm(x, packed, scale, zero, bits, group)
    assert out.shape == (m, n) and out.dtype == np.float32
    # float64 reference from the raw stored values, independent of the dequantize kernel
    u = decode_packed(packed, bits, k)
    z = np.full_like(scale, 1 << (bits - 1), dtype=np.int64) if zero is None else zero.astype(np.int64)
    g = group or k
    w_ref = (u - np.repeat(z, g, axis=1)) * np.repeat(scale.astype(np.float64), g, axis=1)
    expected = x.astype(np.float64) @ w_ref.T
    assert rel_fro(out, expected) <= WNA16_BAND
    np.testing.assert_allclose(ref.dequantize(codes, scale, zero, spec), w_ref, rtol=1e-6, atol=0)


def _int_case(seed: int, m: int, n: int, k: int, xbits: int, wbits: int):
    rng = np.random.default_rng(seed)
    xq = rng.integers(-(1 << (xbits - 1)), 1 << (xbits - 1), size=(m, k)).astype(np.int8)
    wq = rng.integers(-(1 << (wbits - 1)), 1 << (wbits - 1), size=(n, k)).astype(np.int8)
    xs = rng.uniform(1e-3, 1e-1, m).astype(np.float32)
    ws = rng.uniform(1e-3, 1e-1, n).astype(np.float32)
    return xq, xs, wq, ws


def _expected(xq, xs, wq, ws):
    acc = xq.astype(np.int64) @ wq.astype(np.int64).T
    exact_epilogue = (acc.astype(np.float32) * xs[:, None]) * ws[None, :]
    return acc, exact_epilogue, acc * xs[:, None].astype(np.float64) * ws[None, :].astype(np.float64)


gemm_shapes = st.tuples(st.integers(0, 2**31), st.integers(1, 33), st.integers(1, 20), st.integers(1, 300))


@given(gemm_shapes)
def test_int8_gemm(rel_fro, shape) -> None:
    seed, m, n, k = shape
    xq, xs, wq, ws = _int_case(seed, m, n, k, 8, 8)
    acc, exact, f64 = _expected(xq, xs, wq, ws)
    ones_m, ones_n = np.ones(m, np.float32), np.ones(n, np.float32)
    np.testing.assert_array_equal(ref.int8_gemm(xq, ones_m, wq, ones_n), acc.astype(np.float32))
    out = ref.int8_gemm(xq, xs, wq, ws)
    np.testing.assert_array_equal(out, exact)
    assert rel_fro(out, f64) <= INT_BAND


@pytest.mark.parametrize("xbits", [8, 4])
@given(shape=gemm_shapes)
def test_w4a8_and_w4a4_gemm(rel_fro, xbits, shape) -> None:
    seed, m, n, k = shape
    xq, xs, wq, ws = _int_case(seed, m, n, k, xbits, 4)
    _, exact, f64 = _expected(xq, xs, wq, ws)
    packed = ref.pack(wq, 4)
    assert packed.shape == (n, -(-k // 8))
    fn = ref.w4a8_gemm if xbits == 8 else ref.w4a4_gemm
    out = fn(xq, xs, packed, ws)
    np.testing.assert_array_equal(out, exact)
    assert rel_fro(out, f64) <= INT_BAND
    np.testing.assert_array_equal(ref.int8_gemm(xq, xs, wq, ws), out)


def test_int_accumulator_holds_extremes() -> None:
    """-128 * -128 summed over K=4096 is 2^26: exceeds int16 and float32's 2^24, fits int32 exactly."""
    xq = np.full((2, 4096), -128, dtype=np.int8)
    wq = np.full((3, 4096), -128, dtype=np.int8)
    ones2, ones3 = np.ones(2, np.float32), np.ones(3, np.float32)
    np.testing.assert_array_equal(ref.int8_gemm(xq, ones2, wq, ones3), np.full((2, 3), 2.0**26, np.float32))
    w4 = np.full((3, 4096), -8, dtype=np.int8)
    out = ref.w4a8_gemm(xq, ones2, ref.pack(w4, 4), ones3)
    np.testing.assert_array_equal(out, np.full((2, 3), 4096 * 1024, np.float32))


def test_end_to_end_w8a8_close_to_float(make_matrix, rel_fro) -> None:
    """Per-token x per-channel int8 quantization of real-valued data stays within 2% of the float GEMM."""
    x = make_matrix(0, 16, 256)
    w = make_matrix(1, 32, 256)
    xq, xs, _ = ref.quantize_per_token(x, 8)
    wq, ws, _ = ref.quantize_per_token(w, 8)
    assert rel_fro(ref.int8_gemm(xq, xs, wq, ws), x.astype(np.float64) @ w.T) < 0.02


def test_gemm_bad_input(make_matrix) -> None:
    x = make_matrix(0, 4, 32)
    codes, scale, zero = ref.quantize(make_matrix(1, 5, 32), QuantSpec(4, False, "group", 16))
    packed = ref.pack(codes, 4)
    with pytest.raises(ValueError, match=r"w_packed must have shape \[\*, 4\]"):
        ref.wna16_gemm(x, packed[:, :3], scale, zero, 4, 16)
    with pytest.raises(ValueError, match=r"scale must have shape \[5, 2\]"):
        ref.wna16_gemm(x, packed, scale[:, :1], zero, 4, 16)
    with pytest.raises(ValueError, match="not divisible by group_size"):
        ref.wna16_gemm(x, packed, scale, zero, 4, 24)
    with pytest.raises(ValueError, match="zero must hold unsigned zero points"):
        ref.wna16_gemm(x, packed, scale, zero + 16, 4, 16)
    with pytest.raises(ValueError, match="x must be 2-D"):
        ref.wna16_gemm(x[0], packed, scale, zero, 4, 16)
    xq = np.zeros((4, 32), np.int8)
    ones4, ones5 = np.ones(4, np.float32), np.ones(5, np.float32)
    with pytest.raises(ValueError, match="xq must have dtype int8"):
        ref.int8_gemm(xq.astype(np.int32), ones4, xq, ones4)
    with pytest.raises(ValueError, match=r"wq must have shape \[\*, 32\]"):
        ref.int8_gemm(xq, ones4, xq[:, :16], ones4)
    with pytest.raises(ValueError, match=r"x_scale must have shape \[4\]"):
        ref.int8_gemm(xq, ones5, xq, ones4)
    with pytest.raises(ValueError, match=r"needs 4-bit activation codes in \[-8, 7\]"):
        ref.w4a4_gemm(xq + 9, ones4, ref.pack(np.zeros((5, 32), np.int8), 4), ones5)
    with pytest.raises(ValueError, match="largest K"):
        big = np.zeros((1, ref.gemm.MAX_INT_K + 1), np.int8)
        ref.int8_gemm(big, np.ones(1, np.float32), big, np.ones(1, np.float32))
