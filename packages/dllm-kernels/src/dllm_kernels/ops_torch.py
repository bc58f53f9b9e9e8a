"""Torch backend of the quantize and pack primitives: plain torch ops, any device.

The launchers expect inputs validated by :mod:`dllm_kernels.dispatch` (right dtypes and shapes, contiguous,
float64 already rounded to float32); call them through it. Outputs equal the Numba references' bit for bit:

* integer specs: the grid of :mod:`dllm_kernels.torch_grid` on the cells of ``x.reshape(-1, cell_size)``,
  asymmetric results in the unsigned weight storage;
* fp8 e4m3 (``QuantSpec(type="float")``; numba has no fp8 type, so only this backend has it): per-cell
  ``scale = max|x| / 448`` (float32 eps for an all-zero cell), codes
  ``clamp(x / scale, -448, 448).to(torch.float8_e4m3fn)``, values ``codes.float() * scale``, no zero point;
* ``pack`` / ``unpack`` (and ``*_rows`` along dim 0): the ``pack-quantized`` layout of
  :mod:`dllm_kernels.reference.pack`, built from int64 shifts over whole periods of
  ``32 / gcd(bits, 32)`` values (they fill ``bits / gcd(bits, 32)`` int32 words exactly).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dllm_kernels import torch_grid
from dllm_kernels._cells import cell_size, scale_shape
from dllm_kernels.spec import FP8_E4M3_MAX, QuantSpec

__all__ = [
    "dequantize",
    "from_cells",
    "pack",
    "pack_rows",
    "quantize",
    "quantize_per_token",
    "unpack",
    "unpack_rows",
]

_WORD = 1 << 32
_MASK32 = _WORD - 1


def quantize(x: Tensor, spec: QuantSpec) -> tuple[Tensor, Tensor, Tensor | None]:
    """``x [rows, cols]`` (fp16/bf16/fp32) -> ``(codes, scale float32, zero int32 or None)``.

    Codes int8 (symmetric), uint8 (asymmetric) or float8_e4m3fn (fp8); scale and zero shaped
    ``(1,)``, ``(rows, 1)`` or ``(rows, cols / group_size)``.
    """
    rows, cols = x.shape
    cells = x.reshape(-1, cell_size(spec, rows, cols))
    if spec.is_fp8:
        absmax = cells.abs().amax(dim=-1).float()
        scale = absmax / torch.full_like(absmax, FP8_E4M3_MAX)
        scale = scale.masked_fill(scale == 0, torch_grid.EPS32)
        scaled = cells.float() / scale[:, None]
        codes = scaled.clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)
        return codes.reshape(rows, cols), scale.reshape(scale_shape(spec, rows, cols)), None
    return from_cells(*torch_grid.quantize_cells(cells, spec.bits, spec.symmetric), spec, rows, cols)


def from_cells(
    codes: Tensor, scale: Tensor, zero: Tensor | None, spec: QuantSpec, rows: int, cols: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The grid's signed results per cell (codes ``[cells, cell_size]``, scale and zero ``[cells]``) in the
    layout and storage of an int ``spec`` on ``[rows, cols]``: codes ``[rows, cols]``, scale and zero shaped
    by granularity, asymmetric grids unsigned (:func:`dllm_kernels.torch_grid.to_unsigned`)."""
    shape = scale_shape(spec, rows, cols)
    codes, scale = codes.reshape(rows, cols), scale.reshape(shape)
    if zero is None:
        return codes, scale, None
    codes, zero = torch_grid.to_unsigned(codes, zero.reshape(shape), spec.bits)
    return codes, scale, zero


def dequantize(codes: Tensor, scale: Tensor, zero: Tensor | None, spec: QuantSpec) -> Tensor:
    """float32 ``[rows, cols]`` from the outputs of :func:`quantize`."""
    rows, cols = codes.shape
    cells = codes.reshape(-1, cell_size(spec, rows, cols))
    s = scale.float().reshape(-1, 1)
    if spec.is_fp8:
        return (cells.float() * s).reshape(rows, cols)
    z = None if zero is None else zero.reshape(-1, 1)
    return torch_grid.decode(cells, s, z).reshape(rows, cols)


def quantize_per_token(
    x: Tensor, bits: int, symmetric: bool, clip_ratio: float
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``x [M, K]`` -> signed ``(codes int8 [M, K], scale float32 [M], zero int32 [M] or None)``."""
    return torch_grid.quantize_cells(x, bits, symmetric, clip_ratio)


def _period(bits: int) -> tuple[int, int]:
    """(values, int32 words) of the shortest run of ``bits``-bit values that fills whole words."""
    g = math.gcd(bits, 32)
    return 32 // g, bits // g


def pack(codes: Tensor, bits: int) -> Tensor:
    """int8 (symmetric, stored ``q + 2^(b-1)``) / uint8 (asymmetric) codes ``[rows, cols]`` -> int32
    ``[rows, ceil(cols * bits / 32)]``."""
    rows, cols = codes.shape
    n_values, n_words = _period(bits)
    periods = -(-cols // n_values)
    offset = 1 << (bits - 1) if codes.dtype == torch.int8 else 0
    values = codes.new_zeros((rows, periods * n_values), dtype=torch.int64)
    values[:, :cols] = codes.to(torch.int64) + offset
    values = values.reshape(rows, periods, n_values)
    words = values.new_zeros((rows, periods, n_words))
    for j in range(n_values):
        w, off = divmod(j * bits, 32)
        words[:, :, w] |= (values[:, :, j] << off) & _MASK32
        if off + bits > 32:
            words[:, :, w + 1] |= values[:, :, j] >> (32 - off)
    words = words.reshape(rows, periods * n_words)[:, : (cols * bits + 31) // 32]
    return torch.where(words >= 1 << 31, words - _WORD, words).to(torch.int32)


def unpack(packed: Tensor, bits: int, n_cols: int, symmetric: bool) -> Tensor:
    """Inverse of :func:`pack`: int8 codes if ``symmetric`` (stored value minus ``2^(b-1)``), else uint8,
    ``[rows, n_cols]``."""
    rows, n_stored = packed.shape
    n_values, n_words = _period(bits)
    periods = -(-n_cols // n_values)
    words = packed.new_zeros((rows, periods * n_words), dtype=torch.int64)
    words[:, :n_stored] = packed.to(torch.int64) & _MASK32
    words = words.reshape(rows, periods, n_words)
    values = words.new_empty((rows, periods, n_values))
    for j in range(n_values):
        w, off = divmod(j * bits, 32)
        v = words[:, :, w] >> off
        if off + bits > 32:
            v = v | (words[:, :, w + 1] << (32 - off))
        values[:, :, j] = v & ((1 << bits) - 1)
    values = values.reshape(rows, periods * n_values)[:, :n_cols]
    return (values - (1 << (bits - 1))).to(torch.int8) if symmetric else values.to(torch.uint8)


def pack_rows(codes: Tensor, bits: int) -> Tensor:
    """:func:`pack` along dim 0: ``[rows, cols]`` -> int32 ``[ceil(rows * bits / 32), cols]``."""
    return pack(codes.T.contiguous(), bits).T.contiguous()


def unpack_rows(packed: Tensor, bits: int, n_rows: int, symmetric: bool) -> Tensor:
    """Inverse of :func:`pack_rows`: ``[n_rows, cols]`` codes."""
    return unpack(packed.T.contiguous(), bits, n_rows, symmetric).T.contiguous()
