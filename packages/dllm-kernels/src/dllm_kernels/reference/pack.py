"""Numba reference for the compressed-tensors ``pack-quantized`` int32 layout.

Layout (compressed-tensors >= 0.20 ``pack_to_int32``, dense since its PR #715):

* values are packed along the **last** dim (the weight's input dim): ``[rows, cols]`` ->
  ``[rows, ceil(cols * bits / 32)]`` int32;
* each value is stored unsigned: symmetric codes (int8, ``[-2^(b-1), 2^(b-1)-1]``) as offset-binary
  ``q + 2^(b-1)``; asymmetric codes (uint8, ``[0, 2^b-1]``) as they are;
* element ``i`` of a row occupies bits ``[i*b, i*b + b)`` of the row's bit stream, little-endian: word
  ``i*b // 32``, starting at bit ``i*b % 32``; a value may straddle two words (3-bit values do); unused
  high bits of the last word are zero.

``pack_rows`` / ``unpack_rows`` use the same layout along dim 0; compressed-tensors stores asymmetric
``weight_zero_point`` ``[out, in/group]`` that way (``[ceil(out*b/32), in/group]``).

The dtype of the codes selects the convention: int8 = symmetric (offset added on pack, removed on
unpack), uint8 = asymmetric (stored as is). Zero points (int32 from
:func:`~dllm_kernels.reference.quant.quantize`) are unsigned: pass ``zero.astype(np.uint8)``.
"""

from __future__ import annotations

import numba
import numpy as np

from dllm_kernels.reference._checks import as_int_array, check_bits, packed_words

__all__ = ["pack", "pack_rows", "unpack", "unpack_rows"]

_WORD = 1 << 32
_SIGN = 1 << 31


@numba.njit(cache=True, parallel=True)
def _pack_kernel(values: np.ndarray, bits: int, offset: int, out: np.ndarray) -> None:
    """values [rows, cols] int (unsigned after +offset) -> out [rows, words] int32 (pre-allocated)."""
    rows, cols = values.shape
    words = out.shape[1]
    for r in numba.prange(rows):
        for w in range(words):
            lo_bit = w * 32
            first = lo_bit // bits
            last = min(cols - 1, (lo_bit + 31) // bits)
            acc = np.int64(0)
            for i in range(first, last + 1):
                v = np.int64(values[r, i]) + offset
                shift = i * bits - lo_bit  # may be negative for a value straddling into this word
                if shift >= 0:
                    acc |= v << shift
                else:
                    acc |= v >> (-shift)
            acc &= 0xFFFFFFFF
            if acc >= _SIGN:
                acc -= _WORD
            out[r, w] = acc


@numba.njit(cache=True, parallel=True)
def _unpack_kernel(packed: np.ndarray, bits: int, offset: int, out: np.ndarray) -> None:
    """packed [rows, words] int32 -> out [rows, cols] (stored value - offset)."""
    rows, cols = out.shape
    mask = (1 << bits) - 1
    for r in numba.prange(rows):
        for i in range(cols):
            bit = i * bits
            w = bit >> 5
            off = bit & 31
            v = (np.int64(packed[r, w]) & 0xFFFFFFFF) >> off
            if off + bits > 32:
                v |= (np.int64(packed[r, w + 1]) & 0xFFFFFFFF) << (32 - off)
            out[r, i] = (v & mask) - offset


def _codes_and_offset(codes: np.ndarray, bits: int, name: str) -> tuple[np.ndarray, int]:
    arr = as_int_array(codes, name, (np.int8, np.uint8))
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, cols], got shape {arr.shape}")
    if arr.dtype == np.int8:
        lo, hi, offset = -(1 << (bits - 1)), (1 << (bits - 1)) - 1, 1 << (bits - 1)
    else:
        lo, hi, offset = 0, (1 << bits) - 1, 0
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        kind = "symmetric int8" if arr.dtype == np.int8 else "asymmetric uint8"
        raise ValueError(
            f"{name} ({kind}) must lie in [{lo}, {hi}] for bits={bits}, "
            f"got values in [{int(arr.min())}, {int(arr.max())}]"
        )
    return arr, offset


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack codes ``[rows, cols]`` (int8 symmetric or uint8 asymmetric) along the last dim.

    Returns:
        int32 ``[rows, ceil(cols*bits/32)]`` in the compressed-tensors ``pack-quantized`` layout.
    """
    bits = check_bits(bits)
    arr, offset = _codes_and_offset(codes, bits, "codes")
    out = np.empty((arr.shape[0], packed_words(arr.shape[1], bits)), dtype=np.int32)
    _pack_kernel(arr, bits, offset, out)
    return out


def unpack(packed: np.ndarray, bits: int, n_cols: int, symmetric: bool = True) -> np.ndarray:
    """Inverse of :func:`pack`: int32 ``[rows, ceil(n_cols*bits/32)]`` -> codes ``[rows, n_cols]``.

    Returns int8 codes in ``[-2^(b-1), 2^(b-1)-1]`` if ``symmetric`` (stored value minus ``2^(b-1)``),
    else the stored uint8 values in ``[0, 2^b-1]``.
    """
    bits = check_bits(bits)
    if isinstance(n_cols, bool) or not isinstance(n_cols, int | np.integer) or n_cols < 0:
        raise ValueError(f"n_cols must be a non-negative int, got {n_cols!r}")
    arr = as_int_array(packed, "packed", (np.int32,), (None, packed_words(int(n_cols), bits)))
    offset = 1 << (bits - 1) if symmetric else 0
    out = np.empty((arr.shape[0], int(n_cols)), dtype=np.int8 if symmetric else np.uint8)
    _unpack_kernel(arr, bits, offset, out)
    return out


def pack_rows(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``[rows, cols]`` codes along dim 0 -> int32 ``[ceil(rows*bits/32), cols]`` (zero-point layout)."""
    bits = check_bits(bits)
    arr, _ = _codes_and_offset(codes, bits, "codes")
    return np.ascontiguousarray(pack(np.ascontiguousarray(arr.T), bits).T)


def unpack_rows(packed: np.ndarray, bits: int, n_rows: int, symmetric: bool = True) -> np.ndarray:
    """Inverse of :func:`pack_rows`: int32 ``[ceil(n_rows*bits/32), cols]`` -> codes ``[n_rows, cols]``."""
    arr = as_int_array(packed, "packed", (np.int32,))
    if arr.ndim != 2:
        raise ValueError(f"packed must be 2-D, got shape {arr.shape}")
    return np.ascontiguousarray(unpack(np.ascontiguousarray(arr.T), bits, n_rows, symmetric).T)
