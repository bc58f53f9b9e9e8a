"""The integer min/max grid, Numba/NumPy reference: cell ranges, scale and zero point, codes, values.

One grid for every quantizer (spec-driven ``quantize`` and per-token ``quantize_per_token`` both build on
it); the torch grid (:mod:`dllm_kernels.torch_grid`) and the Triton helpers
(:mod:`dllm_kernels.triton._quant_math`) compute the same bits. All arithmetic is float32, with
``b = bits``, ``qmin = -2^(b-1)``, ``qmax = 2^(b-1) - 1``:

* cell range: ``lo = min(min(x), 0) * r``, ``hi = max(max(x), 0) * r`` (clip ratio ``r`` in (0, 1], 1 for
  plain min/max; zero is always representable);
* symmetric: ``scale = max(|lo|, hi) / ((2^b - 1) / 2)``, zero point 0;
* asymmetric: ``scale = (hi - lo) / (2^b - 1)``, ``zero = rint(clamp(qmin - lo / scale, qmin, qmax))``;
* a zero scale (an all-zero cell) becomes float32 eps and its zero point 0;
* ``code = rint(clamp(x / scale + zero, qmin, qmax))``, rint rounding half to even;
* value ``float32(code - zero) * scale``.

Codes and zero points here are signed (int8 codes, int32 zero). :func:`to_unsigned` gives the weight
storage of asymmetric grids (compressed-tensors): both shifted by ``2^(b-1)``, codes uint8.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["EPS32", "decode_kernel", "encode_kernel", "minmax_kernel", "scale_zero", "to_unsigned"]

EPS32 = np.float32(np.finfo(np.float32).eps)


@numba.njit(cache=True, parallel=True)
def minmax_kernel(x: np.ndarray, group: int, lo: np.ndarray, hi: np.ndarray) -> None:
    """Per (row, group of ``group`` columns) min and max of x [rows, cols] into lo/hi [rows, cols/group]."""
    rows = x.shape[0]
    n_groups = lo.shape[1]
    for r in numba.prange(rows):
        for g in range(n_groups):
            mn = x[r, g * group]
            mx = mn
            for c in range(g * group + 1, (g + 1) * group):
                v = x[r, c]
                mn = min(mn, v)
                mx = max(mx, v)
            lo[r, g] = mn
            hi[r, g] = mx


@numba.njit(cache=True, parallel=True)
def encode_kernel(
    x: np.ndarray, scale: np.ndarray, zero: np.ndarray, qmin: np.float32, qmax: np.float32, out: np.ndarray
) -> None:
    """out[r, c] = rint(clamp(x / scale + zero, qmin, qmax)), signed.

    ``x`` float32 ``[rows, cols]``; ``scale`` and ``zero`` float32 ``[1 or rows, groups]`` (zero all 0 for a
    symmetric grid), column ``c`` belonging to group ``c // (cols / groups)``.
    """
    rows, cols = x.shape
    n_groups = scale.shape[1]
    group = cols // n_groups
    per_row = scale.shape[0] != 1
    for r in numba.prange(rows):
        sr = np.int64(r) if per_row else np.int64(0)
        for c in range(cols):
            g = c // group
            v = x[r, c] / scale[sr, g] + zero[sr, g]
            v = min(max(v, qmin), qmax)
            out[r, c] = np.int32(np.rint(v))


@numba.njit(cache=True, parallel=True)
def decode_kernel(codes: np.ndarray, scale: np.ndarray, zero: np.ndarray, out: np.ndarray) -> None:
    """out[r, c] = float32(codes[r, c] - zero[cell]) * scale[cell]; shapes as in :func:`encode_kernel`
    (``zero`` int32, all 0 for a symmetric grid). Either storage works: the offset cancels."""
    rows, cols = codes.shape
    n_groups = scale.shape[1]
    group = cols // n_groups
    per_row = scale.shape[0] != 1
    for r in numba.prange(rows):
        sr = np.int64(r) if per_row else np.int64(0)
        for c in range(cols):
            g = c // group
            out[r, c] = np.float32(np.int32(codes[r, c]) - zero[sr, g]) * scale[sr, g]


def scale_zero(
    lo: np.ndarray, hi: np.ndarray, bits: int, symmetric: bool, clip_ratio: float = 1.0
) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 scale and int32 signed zero point (None if symmetric) from a cell's min ``lo`` and max ``hi``.

    ``lo``/``hi`` are float arrays of equal shape (the results have it); ``clip_ratio`` in (0, 1] shrinks
    the range first. Formulas in the module docstring.
    """
    r = np.float32(clip_ratio)
    lo = np.minimum(lo.astype(np.float32), np.float32(0)) * r
    hi = np.maximum(hi.astype(np.float32), np.float32(0)) * r
    qmin, qmax = np.float32(-(1 << (bits - 1))), np.float32((1 << (bits - 1)) - 1)
    q_range = np.float32((1 << bits) - 1)
    zero = None
    if symmetric:
        scale = np.maximum(np.abs(lo), hi) / (q_range / np.float32(2))
    else:
        scale = (hi - lo) / q_range
        safe = np.where(scale == 0, np.float32(1), scale)
        zs = np.rint(np.clip(qmin - lo / safe, qmin, qmax))
        zero = np.where(scale == 0, 0, zs).astype(np.int32)
    return np.where(scale == 0, EPS32, scale).astype(np.float32), zero


def to_unsigned(codes: np.ndarray, zero: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Weight storage of an asymmetric grid: ``(uint8 codes + 2^(b-1), int32 zero + 2^(b-1))``."""
    half = 1 << (bits - 1)
    return (codes.astype(np.int32) + half).astype(np.uint8), (zero + half).astype(np.int32)
