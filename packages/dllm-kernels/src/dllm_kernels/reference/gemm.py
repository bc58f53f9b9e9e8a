"""Numba reference GEMMs on quantized weights. All compute ``y = x @ W^T`` with W ``[N, K]`` (out, in).

* ``wna16_gemm``: float activations x packed ``bits``-bit weights (compressed-tensors ``pack-quantized``
  layout, see :mod:`dllm_kernels.reference.pack`) with group-wise float32 scales and optional unsigned int32
  zero points: ``W[n, k] = float32(u[n, k] - z[n, k // G]) * scale[n, k // G]``, where ``u`` is the stored
  unsigned value and ``z = 2^(b-1)`` when ``zero`` is None (symmetric). Each weight row is dequantized
  inside the K loop into a length-K buffer (W is never materialized as a whole); products are accumulated
  in float64 and the result is rounded once to float32.
* ``grouped_int_gemm``: integer codes with group-wise weight scales: per group of columns an exact integer
  accumulation and ``(float32(acc_g) * x_scale[m]) * w_scale[n, g]``, summed over the groups in order in
  float32 (one group: the ``int8_gemm`` computation).
* ``int8_gemm`` (W8A8), ``w4a8_gemm``, ``w4a4_gemm``: integer codes, exact integer accumulation (identical
  to an int32 accumulator: K is limited so that ``K * 128 * 128 < 2^31``), then the epilogue
  ``(float32(acc) * x_scale[m]) * w_scale[n]`` in float32, in that order.
  ``w4a8_gemm`` takes symmetric 4-bit weights packed as above (offset-binary ``q + 8``, 8 per int32) and
  unpacks each row to int8 in the K loop. ``w4a4_gemm`` is the same computation for activations quantized to
  4 bits (values in ``[-8, 7]`` held in int8; checked), e.g. from ``quantize_per_token(x, 4)``.
"""

from __future__ import annotations

import numba
import numpy as np

from dllm_kernels.reference._checks import as_float2d, as_int_array, as_scale, check_bits, packed_words

__all__ = ["grouped_int_gemm", "int8_gemm", "w4a4_gemm", "w4a8_gemm", "wna16_gemm"]

MAX_INT_K = (1 << 31) // (128 * 128)


@numba.njit(cache=True, inline="always")
def _extract(packed: np.ndarray, r: int, i: int, bits: int) -> int:
    """Unsigned ``bits``-bit value number ``i`` of row ``r`` of a pack-quantized int32 array."""
    bit = i * bits
    w = bit >> 5
    off = bit & 31
    v = (np.int64(packed[r, w]) & 0xFFFFFFFF) >> off
    if off + bits > 32:
        v |= (np.int64(packed[r, w + 1]) & 0xFFFFFFFF) << (32 - off)
    return v & ((1 << bits) - 1)


@numba.njit(cache=True, parallel=True)
def _wna16_kernel(
    x: np.ndarray,
    packed: np.ndarray,
    scale: np.ndarray,
    zero: np.ndarray,
    has_zero: bool,
    bits: int,
    group: int,
    out: np.ndarray,
) -> None:
    m_rows, k_cols = x.shape
    n_rows = packed.shape[0]
    offset = 1 << (bits - 1)
    for n in numba.prange(n_rows):
        w = np.empty(k_cols, dtype=np.float32)
        for k in range(k_cols):
            g = k // group
            z = zero[n, g] if has_zero else offset
            w[k] = np.float32(_extract(packed, n, k, bits) - z) * scale[n, g]
        for m in range(m_rows):
            acc = 0.0
            for k in range(k_cols):
                acc += np.float64(x[m, k]) * np.float64(w[k])
            out[m, n] = acc


@numba.njit(cache=True, parallel=True)
def _int8_kernel(xq: np.ndarray, xs: np.ndarray, wq: np.ndarray, ws: np.ndarray, out: np.ndarray) -> None:
    m_rows, k_cols = xq.shape
    for n in numba.prange(wq.shape[0]):
        for m in range(m_rows):
            acc = 0
            for k in range(k_cols):
                acc += np.int32(xq[m, k]) * np.int32(wq[n, k])
            out[m, n] = (np.float32(acc) * xs[m]) * ws[n]


@numba.njit(cache=True, parallel=True)
def _w4_kernel(xq: np.ndarray, xs: np.ndarray, packed: np.ndarray, ws: np.ndarray, out: np.ndarray) -> None:
    m_rows, k_cols = xq.shape
    for n in numba.prange(packed.shape[0]):
        w = np.empty(k_cols, dtype=np.int8)
        for k in range(k_cols):
            w[k] = _extract(packed, n, k, 4) - 8
        for m in range(m_rows):
            acc = 0
            for k in range(k_cols):
                acc += np.int32(xq[m, k]) * np.int32(w[k])
            out[m, n] = (np.float32(acc) * xs[m]) * ws[n]


@numba.njit(cache=True, parallel=True)
def _grouped_int_kernel(
    xq: np.ndarray, xs: np.ndarray, wq: np.ndarray, ws: np.ndarray, group: int, out: np.ndarray
) -> None:
    m_rows, k_cols = xq.shape
    for n in numba.prange(wq.shape[0]):
        for m in range(m_rows):
            total = np.float32(0)
            for g in range(k_cols // group):
                acc = 0
                for k in range(g * group, (g + 1) * group):
                    acc += np.int32(xq[m, k]) * np.int32(wq[n, k])
                total += (np.float32(acc) * xs[m]) * ws[n, g]
            out[m, n] = total


def grouped_int_gemm(xq: np.ndarray, x_scale: np.ndarray, wq: np.ndarray, w_scale: np.ndarray) -> np.ndarray:
    """int8 ``xq [M, K]`` x int8 weight codes ``wq [N, K]`` with group-wise scales -> float32 ``[M, N]``.

    ``x_scale`` float32 ``[M]`` (per token), ``w_scale`` float32 ``[N, G]`` (G groups of K/G columns).
    """
    xq = as_int_array(xq, "xq", (np.int8,))
    m, k = _check_int_x(xq)
    wq = as_int_array(wq, "wq", (np.int8,), (None, k))
    n = wq.shape[0]
    if w_scale.ndim != 2 or w_scale.shape[0] != n or w_scale.shape[1] == 0 or k % w_scale.shape[1]:
        raise ValueError(f"w_scale must be [{n}, G] with G dividing K={k}, got shape {w_scale.shape}")
    xs = as_scale(x_scale, "x_scale", (m,))
    ws = as_scale(w_scale, "w_scale", w_scale.shape)
    out = np.empty((m, n), dtype=np.float32)
    _grouped_int_kernel(xq, xs, wq, ws, k // ws.shape[1], out)
    return out


def wna16_gemm(
    x: np.ndarray,
    w_packed: np.ndarray,
    scale: np.ndarray,
    zero: np.ndarray | None,
    bits: int,
    group_size: int | None,
) -> np.ndarray:
    """``x [M, K] float @ dequant(W)^T`` -> float32 ``[M, N]``.

    Args:
        x: float activations ``[M, K]`` (computed in float32).
        w_packed: int32 ``[N, ceil(K*bits/32)]`` pack-quantized weight codes.
        scale: float32 ``[N, K/group_size]``.
        zero: int32 ``[N, K/group_size]`` unsigned zero points in ``[0, 2^b-1]``, or None (symmetric).
        bits: 2, 3, 4 or 8.
        group_size: columns per scale group (must divide K); None means one group per row (per-channel).
    """
    bits = check_bits(bits)
    x = as_float2d(x, "x")
    m, k = x.shape
    group = _check_group(group_size, k)
    w_packed = as_int_array(w_packed, "w_packed", (np.int32,), (None, packed_words(k, bits)))
    n = w_packed.shape[0]
    scale = as_scale(scale, "scale", (n, k // group))
    if zero is None:
        zero_arr = np.zeros((1, 1), dtype=np.int32)
    else:
        zero_arr = as_int_array(zero, "zero", (np.int32,), (n, k // group))
        if zero_arr.size and (zero_arr.min() < 0 or zero_arr.max() > (1 << bits) - 1):
            raise ValueError(f"zero must hold unsigned zero points in [0, {(1 << bits) - 1}] for bits={bits}")
    out = np.empty((m, n), dtype=np.float32)
    _wna16_kernel(x, w_packed, scale, zero_arr, zero is not None, bits, group, out)
    return out


def int8_gemm(xq: np.ndarray, x_scale: np.ndarray, wq: np.ndarray, w_scale: np.ndarray) -> np.ndarray:
    """W8A8: int8 ``xq [M, K]`` x int8 ``wq [N, K]`` with int32 accumulation -> float32 ``[M, N]``.

    ``x_scale`` float32 ``[M]`` (per token), ``w_scale`` float32 ``[N]`` (per output channel).
    """
    xq = as_int_array(xq, "xq", (np.int8,))
    m, k = _check_int_x(xq)
    wq = as_int_array(wq, "wq", (np.int8,), (None, k))
    n = wq.shape[0]
    xs = as_scale(x_scale, "x_scale", (m,))
    ws = as_scale(w_scale, "w_scale", (n,))
    out = np.empty((m, n), dtype=np.float32)
    _int8_kernel(xq, xs, wq, ws, out)
    return out


def w4a8_gemm(xq: np.ndarray, x_scale: np.ndarray, w_packed: np.ndarray, w_scale: np.ndarray) -> np.ndarray:
    """W4A8: int8 ``xq [M, K]`` x symmetric 4-bit ``w_packed`` int32 ``[N, ceil(K/8)]`` -> float32 ``[M, N]``.

    Weights are unpacked to int8 (stored value - 8) row by row, accumulated exactly in integers, then
    scaled by ``x_scale [M]`` and ``w_scale [N]``.
    """
    xq = as_int_array(xq, "xq", (np.int8,))
    m, k = _check_int_x(xq)
    w_packed = as_int_array(w_packed, "w_packed", (np.int32,), (None, packed_words(k, 4)))
    n = w_packed.shape[0]
    xs = as_scale(x_scale, "x_scale", (m,))
    ws = as_scale(w_scale, "w_scale", (n,))
    out = np.empty((m, n), dtype=np.float32)
    _w4_kernel(xq, xs, w_packed, ws, out)
    return out


def w4a4_gemm(xq: np.ndarray, x_scale: np.ndarray, w_packed: np.ndarray, w_scale: np.ndarray) -> np.ndarray:
    """W4A4: :func:`w4a8_gemm` with 4-bit activations (int8 ``xq`` holding values in ``[-8, 7]``)."""
    xq = as_int_array(xq, "xq", (np.int8,))
    if xq.size and (xq.min() < -8 or xq.max() > 7):
        raise ValueError(
            f"w4a4_gemm needs 4-bit activation codes in [-8, 7], got [{xq.min()}, {xq.max()}]; "
            "quantize with quantize_per_token(x, 4) or use w4a8_gemm"
        )
    return w4a8_gemm(xq, x_scale, w_packed, w_scale)


def _check_group(group_size: int | None, k: int) -> int:
    if group_size is None:
        return max(k, 1)
    if isinstance(group_size, bool) or not isinstance(group_size, int | np.integer) or group_size <= 0:
        raise ValueError(f"group_size must be a positive int or None (per-channel), got {group_size!r}")
    if k % group_size:
        raise ValueError(f"K={k} is not divisible by group_size={group_size}")
    return int(group_size)


def _check_int_x(xq: np.ndarray) -> tuple[int, int]:
    if xq.ndim != 2:
        raise ValueError(f"xq must be 2-D [M, K], got shape {xq.shape}")
    m, k = xq.shape
    if k > MAX_INT_K:
        raise ValueError(f"K={k} exceeds {MAX_INT_K}, the largest K whose int32 accumulator cannot overflow")
    return m, k
