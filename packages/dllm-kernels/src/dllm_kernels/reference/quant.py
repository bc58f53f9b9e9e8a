"""Numba reference for spec-driven quantize / dequantize / fake-quantize of 2-D float arrays.

Conventions (identical in every backend; they reproduce compressed-tensors 0.20 bit for bit, see
``compressed_tensors.quantization.utils.calculate_qparams`` and ``lifecycle.forward``):

* Input ``x [rows, cols]`` is computed in float32 (float16/float64 are cast first).
* Statistics per scale cell: ``lo = min(min(x), 0)``, ``hi = max(max(x), 0)`` (zero is always
  representable). Cells by granularity: ``tensor`` -> scale ``[1]``; ``channel`` and ``token`` -> one per
  row, ``[rows, 1]``; ``group`` -> ``[rows, cols/group_size]`` (``cols % group_size == 0`` required).
* Symmetric int: ``scale = max(|lo|, hi) / ((2^b - 1) / 2)`` (e.g. absmax/7.5 for 4 bits, absmax/127.5 for 8
  bits: the full signed range ``[-2^(b-1), 2^(b-1)-1]`` is used, the extreme positive value clips by at most
  half a step); ``codes = clamp(rint(x / scale), -2^(b-1), 2^(b-1)-1)`` as int8; no zero point.
* Asymmetric int: ``scale = (hi - lo) / (2^b - 1)``; signed zero ``zs = rint(clamp(-2^(b-1) - lo/scale,
  -2^(b-1), 2^(b-1)-1))``; ``codes = clamp(rint(x/scale + zs), ...) + 2^(b-1)`` stored as uint8 in
  ``[0, 2^b-1]``; the returned zero point is int32 ``zs + 2^(b-1)`` (same unsigned convention as the codes).
* A zero scale (an all-zero cell) is replaced by float32 eps (1.19e-7), so nothing divides by zero; the
  zero point of such a cell is ``2^(b-1)`` (signed 0). Dequantization of an all-zero cell gives exact zeros.
* Rounding is round-half-to-even (``np.rint``, same as ``torch.round``) in every backend.
* ``dequantize``: ``(float32(codes - zero)) * scale`` (zero = 0 for symmetric) as float32.
* fp8 e4m3 (``type="float"``): scales here (``absmax / 448``), the fp8 cast itself needs torch
  (``torch.float8_e4m3fn``; numba has no fp8 type) and lives in :mod:`dllm_kernels.ops_cpu`.
  :func:`quantize` raises for fp8 specs; :func:`quant_params` supports them.
"""

from __future__ import annotations

import numba
import numpy as np

from dllm_kernels.reference._checks import as_float2d, as_int_array, as_scale
from dllm_kernels.spec import FP8_E4M3_MAX, QuantSpec

__all__ = ["dequantize", "fake_quantize", "quant_params", "quantize", "scale_zero_from_minmax"]

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
    x: np.ndarray,
    scale: np.ndarray,
    zero_s: np.ndarray,
    asym: bool,
    qmin: np.float32,
    qmax: np.float32,
    offset: int,
    out: np.ndarray,
) -> None:
    """out[r,c] = clamp(rint(x/scale (+ zero_s)), qmin, qmax) + offset; scale/zero_s [1 or rows, groups]."""
    rows, cols = x.shape
    n_groups = scale.shape[1]
    group = cols // n_groups
    per_row = scale.shape[0] != 1
    for r in numba.prange(rows):
        sr = np.int64(r) if per_row else np.int64(0)
        for c in range(cols):
            g = c // group
            v = x[r, c] / scale[sr, g]
            if asym:
                v = v + zero_s[sr, g]
            v = min(max(v, qmin), qmax)
            out[r, c] = np.int32(np.rint(v)) + offset


@numba.njit(cache=True, parallel=True)
def decode_kernel(
    codes: np.ndarray, scale: np.ndarray, zero: np.ndarray, asym: bool, out: np.ndarray
) -> None:
    """out[r,c] = float32(codes[r,c] - zero[cell]) * scale[cell] (zero ignored when not asym)."""
    rows, cols = codes.shape
    n_groups = scale.shape[1]
    group = cols // n_groups
    per_row = scale.shape[0] != 1
    for r in numba.prange(rows):
        sr = np.int64(r) if per_row else np.int64(0)
        for c in range(cols):
            g = c // group
            q = np.int32(codes[r, c])
            if asym:
                q = q - zero[sr, g]
            out[r, c] = np.float32(q) * scale[sr, g]


def _cells(spec: QuantSpec, rows: int, cols: int) -> int:
    """Columns per scale cell along a row (``cols`` for tensor/channel/token)."""
    if spec.granularity != "group":
        return cols
    assert spec.group_size is not None
    if cols % spec.group_size:
        raise ValueError(
            f"cols={cols} is not divisible by group_size={spec.group_size}; pad the input dim or pick a "
            "group_size that divides it"
        )
    return spec.group_size


def scale_zero_from_minmax(
    lo: np.ndarray, hi: np.ndarray, bits: int, symmetric: bool, fp8: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 scale and float32 *signed* zero point (None if symmetric) from per-cell min/max.

    ``lo``/``hi`` are float32 arrays of equal shape; the formulas are in the module docstring. The signed
    zero ``zs`` lies in ``[-2^(b-1), 2^(b-1)-1]``; add ``2^(b-1)`` for the unsigned convention.
    """
    lo = np.minimum(lo.astype(np.float32), np.float32(0))
    hi = np.maximum(hi.astype(np.float32), np.float32(0))
    if fp8:
        qmin, qmax = np.float32(-FP8_E4M3_MAX), np.float32(FP8_E4M3_MAX)
    else:
        qmin, qmax = np.float32(-(1 << (bits - 1))), np.float32((1 << (bits - 1)) - 1)
    q_range = np.float32(qmax - qmin)
    if symmetric:
        scale = np.maximum(np.abs(lo), np.abs(hi)) / (q_range / np.float32(2))
        zero_s = None
    else:
        scale = (hi - lo) / q_range
        with np.errstate(divide="ignore", invalid="ignore"):
            zero_s = np.clip(qmin - lo / scale, qmin, qmax)
        zero_s = np.rint(np.where(scale == 0, np.float32(0), zero_s)).astype(np.float32)
    scale = np.where(scale == 0, EPS32, scale).astype(np.float32)
    return scale, zero_s


def quant_params(x: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """Scale (float32, shaped by granularity) and signed float32 zero point (None if symmetric) for ``x``.

    Works for int and fp8 specs. ``x`` is ``[rows, cols]`` float.
    """
    x = as_float2d(x, "x")
    rows, cols = x.shape
    if rows == 0 or cols == 0:
        raise ValueError(f"x must be non-empty, got shape {x.shape}")
    group = _cells(spec, rows, cols)
    lo = np.empty((rows, cols // group), dtype=np.float32)
    hi = np.empty_like(lo)
    minmax_kernel(x, group, lo, hi)
    if spec.granularity == "tensor":
        lo, hi = lo.min().reshape(1), hi.max().reshape(1)
    return scale_zero_from_minmax(lo, hi, spec.bits, spec.symmetric, spec.is_fp8)


def _as2d(a: np.ndarray) -> np.ndarray:
    return a.reshape(1, 1) if a.ndim == 1 else a


def quantize(x: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Quantize ``x [rows, cols]`` (float) with an int ``spec``.

    Returns:
        codes: int8 ``[rows, cols]`` in ``[-2^(b-1), 2^(b-1)-1]`` if symmetric, else uint8 in ``[0, 2^b-1]``.
        scale: float32 ``[1]`` (tensor), ``[rows, 1]`` (channel/token) or ``[rows, cols/group_size]``.
        zero: int32 with the shape of ``scale`` in ``[0, 2^b-1]`` if asymmetric, else None.
    """
    if spec.is_fp8:
        raise ValueError(
            "fp8 (type='float') quantization needs torch's float8_e4m3fn cast: use "
            "dllm_kernels.ops_cpu.quantize (this numpy reference provides its scales via quant_params)"
        )
    x = as_float2d(x, "x")
    scale, zero_s = quant_params(x, spec)
    asym = zero_s is not None
    offset = 0 if spec.symmetric else 1 << (spec.bits - 1)
    half = 1 << (spec.bits - 1)
    codes = np.empty(x.shape, dtype=np.int8 if spec.symmetric else np.uint8)
    zs2 = _as2d(zero_s) if asym else np.zeros((1, 1), dtype=np.float32)
    encode_kernel(x, _as2d(scale), zs2, asym, np.float32(-half), np.float32(half - 1), offset, codes)
    zero = (zero_s.astype(np.int32) + half) if asym else None
    return codes, scale, zero


def dequantize(codes: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, spec: QuantSpec) -> np.ndarray:
    """float32 ``[rows, cols]`` from the outputs of :func:`quantize` (int specs)."""
    if spec.is_fp8:
        raise ValueError("fp8 dequantization needs torch: use dllm_kernels.ops_cpu.dequantize")
    codes = as_int_array(codes, "codes", (np.int8,) if spec.symmetric else (np.uint8,))
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D [rows, cols], got shape {codes.shape}")
    rows, cols = codes.shape
    if spec.granularity == "tensor":
        want: tuple[int, ...] = (1,)
    else:
        want = (rows, cols // _cells(spec, rows, cols))
    scale = as_scale(scale, "scale", want)
    if spec.symmetric:
        if zero is not None:
            raise ValueError("zero must be None for a symmetric spec")
        zero2 = np.zeros((1, 1), dtype=np.int32)
    else:
        if zero is None:
            raise ValueError("an asymmetric spec needs the int32 zero point returned by quantize")
        zero2 = _as2d(as_int_array(zero, "zero", (np.int32,), want))
    out = np.empty((rows, cols), dtype=np.float32)
    decode_kernel(codes, _as2d(scale), zero2, not spec.symmetric, out)
    return out


def fake_quantize(x: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """``dequantize(*quantize(x, spec), spec)``: float32 ``[rows, cols]`` on the quantization grid."""
    return dequantize(*quantize(x, spec), spec)
