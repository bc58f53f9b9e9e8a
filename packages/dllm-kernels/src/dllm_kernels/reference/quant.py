"""Numba reference for spec-driven quantize / dequantize / fake-quantize of 2-D float arrays.

Conventions (identical in every backend; they reproduce compressed-tensors 0.20 bit for bit, see
``compressed_tensors.quantization.utils.calculate_qparams`` and ``lifecycle.forward``):

* Input ``x [rows, cols]`` is computed in float32 (float16/float64 are cast first).
* The grid is :mod:`dllm_kernels.reference.grid` (min/max range per scale cell, clip ratio 1). Cells by
  granularity: ``tensor`` -> scale ``[1]``; ``channel`` and ``token`` -> one per row, ``[rows, 1]``;
  ``group`` -> ``[rows, cols/group_size]`` (``cols % group_size == 0`` required).
* Symmetric int: ``scale = max(|lo|, hi) / ((2^b - 1) / 2)`` (e.g. absmax/7.5 for 4 bits, absmax/127.5 for 8
  bits: the full signed range ``[-2^(b-1), 2^(b-1)-1]`` is used, the extreme positive value clips by at most
  half a step); codes int8; no zero point.
* Asymmetric int: the grid's signed codes and zero are stored unsigned (weight storage,
  :func:`~dllm_kernels.reference.grid.to_unsigned`): codes uint8 in ``[0, 2^b-1]``, zero point int32
  ``zs + 2^(b-1)``.
* A zero scale (an all-zero cell) is replaced by float32 eps (1.19e-7), so nothing divides by zero; the
  zero point of such a cell is ``2^(b-1)`` (signed 0). Dequantization of an all-zero cell gives exact zeros.
* Rounding is round-half-to-even (``np.rint``, same as ``torch.round``) in every backend.
* ``dequantize``: ``(float32(codes - zero)) * scale`` (zero = 0 for symmetric) as float32.
* fp8 e4m3 (``type="float"``) needs torch's ``float8_e4m3fn`` (numba has no fp8 type): it is the torch
  backend's (:mod:`dllm_kernels.ops_torch`); :func:`quantize` and :func:`dequantize` here raise for it.
"""

from __future__ import annotations

import numpy as np

from dllm_kernels._cells import cell_size, scale_shape
from dllm_kernels.reference._checks import as_float2d, as_int_array, as_scale
from dllm_kernels.reference.grid import decode_kernel, encode_kernel, minmax_kernel, scale_zero, to_unsigned
from dllm_kernels.spec import QuantSpec

__all__ = ["dequantize", "fake_quantize", "quant_params", "quantize"]


def _require_int(spec: QuantSpec) -> None:
    if spec.is_fp8:
        raise ValueError(
            "fp8 (type='float') needs torch's float8_e4m3fn: use dllm_kernels.quantize / dequantize "
            "(the torch backend); this numpy reference covers integer specs"
        )


def quant_params(x: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """Scale (float32, shaped by granularity) and signed int32 zero point (None if symmetric) of the grid
    of ``x [rows, cols]`` (float) under an int ``spec``."""
    _require_int(spec)
    x = as_float2d(x, "x")
    rows, cols = x.shape
    if rows == 0 or cols == 0:
        raise ValueError(f"x must be non-empty, got shape {x.shape}")
    group = cols if spec.granularity == "tensor" else cell_size(spec, rows, cols)
    lo = np.empty((rows, cols // group), dtype=np.float32)
    hi = np.empty_like(lo)
    minmax_kernel(x, group, lo, hi)
    if spec.granularity == "tensor":
        lo, hi = lo.min().reshape(1), hi.max().reshape(1)
    return scale_zero(lo, hi, spec.bits, spec.symmetric)


def _as2d(a: np.ndarray) -> np.ndarray:
    return a.reshape(1, 1) if a.ndim == 1 else a


def quantize(x: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Quantize ``x [rows, cols]`` (float) with an int ``spec``.

    Returns:
        codes: int8 ``[rows, cols]`` in ``[-2^(b-1), 2^(b-1)-1]`` if symmetric, else uint8 in ``[0, 2^b-1]``.
        scale: float32 ``[1]`` (tensor), ``[rows, 1]`` (channel/token) or ``[rows, cols/group_size]``.
        zero: int32 with the shape of ``scale`` in ``[0, 2^b-1]`` if asymmetric, else None.
    """
    _require_int(spec)
    x = as_float2d(x, "x")
    scale, zero = quant_params(x, spec)
    half = 1 << (spec.bits - 1)
    codes = np.empty(x.shape, dtype=np.int8)
    zero_f = np.zeros_like(scale) if zero is None else zero.astype(np.float32)
    encode_kernel(x, _as2d(scale), _as2d(zero_f), np.float32(-half), np.float32(half - 1), codes)
    if zero is None:
        return codes, scale, None
    codes, zero = to_unsigned(codes, zero, spec.bits)
    return codes, scale, zero


def dequantize(codes: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, spec: QuantSpec) -> np.ndarray:
    """float32 ``[rows, cols]`` from the outputs of :func:`quantize` (int specs)."""
    _require_int(spec)
    codes = as_int_array(codes, "codes", (np.int8,) if spec.symmetric else (np.uint8,))
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D [rows, cols], got shape {codes.shape}")
    rows, cols = codes.shape
    want = scale_shape(spec, rows, cols)
    scale = as_scale(scale, "scale", want)
    if spec.symmetric:
        if zero is not None:
            raise ValueError("zero must be None for a symmetric spec")
        zero = np.zeros(want, dtype=np.int32)
    elif zero is None:
        raise ValueError("an asymmetric spec needs the int32 zero point returned by quantize")
    else:
        zero = as_int_array(zero, "zero", (np.int32,), want)
    out = np.empty((rows, cols), dtype=np.float32)
    decode_kernel(codes, _as2d(scale), _as2d(zero), out)
    return out


def fake_quantize(x: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """``dequantize(*quantize(x, spec), spec)``: float32 ``[rows, cols]`` on the quantization grid."""
    return dequantize(*quantize(x, spec), spec)
