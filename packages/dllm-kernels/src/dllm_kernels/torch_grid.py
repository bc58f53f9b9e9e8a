"""The integer min/max grid in torch, on any device: scale and zero point from a cell's range, codes, values.

The one torch implementation of the grid: the torch backend of the dispatched primitives
(:mod:`dllm_kernels.ops_torch`) and graph-side code (GPTQ, RTN's clip search, AWQ, static activation and V
quantizers) use it. It computes the same bits as the Numba reference (:mod:`dllm_kernels.reference.grid`)
and the Triton helpers (:mod:`dllm_kernels.triton._quant_math`). All arithmetic is float32, with
``b = bits``, ``qmin = -2^(b-1)``, ``qmax = 2^(b-1) - 1``:

* cell range: ``lo = min(min(x), 0) * r``, ``hi = max(max(x), 0) * r`` (clip ratio ``r`` in (0, 1], 1 for
  plain min/max);
* symmetric: ``scale = max(|lo|, hi) / ((2^b - 1) / 2)``, no zero point;
* asymmetric: ``scale = (hi - lo) / (2^b - 1)``, ``zero = rint(clamp(qmin - lo / scale, qmin, qmax))``;
* a zero scale (an all-zero cell) becomes float32 eps and its zero point 0;
* ``code = rint(clamp(x / scale + zero, qmin, qmax))``, rint rounding half to even (``torch.round``);
* value ``float32(code - zero) * scale``.

Storage. The grid's codes and zero points are signed: int8 codes, int32 zero in ``[qmin, qmax]``; activations
are stored that way. Weights follow compressed-tensors: an asymmetric grid is stored unsigned
(:func:`to_unsigned`: codes uint8 ``code + 2^(b-1)``, zero int32 ``zero + 2^(b-1)``), a symmetric one as the
signed int8 codes. :func:`decode` reads both storages, the offset cancels in ``code - zero``.

Divisions by a constant divide by a tensor of it: on CUDA, torch turns a division by a Python scalar into a
multiplication by its reciprocal, which is not the IEEE quotient the other backends compute.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["EPS32", "decode", "encode", "quantize_cells", "scale_zero", "to_unsigned"]

EPS32 = torch.finfo(torch.float32).eps


def _div(t: Tensor, value: float) -> Tensor:
    """IEEE float32 quotient ``t / value`` on every device (see the module docstring)."""
    return t / torch.full_like(t, value)


def scale_zero(
    lo: Tensor, hi: Tensor, bits: int, symmetric: bool, clip_ratio: float | Tensor = 1.0
) -> tuple[Tensor, Tensor | None]:
    """float32 scale and int32 signed zero point (None if symmetric) from a cell's min ``lo`` and max ``hi``.

    Args:
        lo, hi: float tensors of one shape (any), the cells' minimum and maximum; the results have it.
        bits: 2, 3, 4 or 8.
        symmetric: no zero point if True.
        clip_ratio: in (0, 1], a number or a float32 tensor broadcasting against ``lo``; shrinks the range.
    """
    half = 1 << (bits - 1)
    lo = torch.clamp(lo.float(), max=0.0) * clip_ratio
    hi = torch.clamp(hi.float(), min=0.0) * clip_ratio
    zero = None
    if symmetric:
        scale = _div(torch.maximum(lo.abs(), hi), ((1 << bits) - 1) / 2)
    else:
        scale = _div(hi - lo, float((1 << bits) - 1))
        empty = scale == 0
        zs = (-half - lo / scale.masked_fill(empty, 1.0)).clamp(-half, half - 1).round()
        zero = zs.masked_fill(empty, 0.0).to(torch.int32)
    return scale.masked_fill(scale == 0, EPS32), zero


def encode(x: Tensor, scale: Tensor, zero: Tensor | None, bits: int) -> Tensor:
    """Signed int8 codes of ``x`` (any float dtype, computed in float32).

    ``scale`` (float32) and the signed ``zero`` (int32, None for symmetric) broadcast against ``x``; the
    codes have the broadcast shape, values in ``[-2^(b-1), 2^(b-1) - 1]``.
    """
    half = 1 << (bits - 1)
    v = x.float() / scale
    if zero is not None:
        v = v + zero
    return v.clamp(-half, half - 1).round().to(torch.int8)


def decode(codes: Tensor, scale: Tensor, zero: Tensor | None) -> Tensor:
    """float32 values ``float32(codes - zero) * scale`` (zero 0 when None), broadcasting as in :func:`encode`.

    ``codes`` and ``zero`` in one storage: signed int8 and signed zero, or unsigned uint8 and unsigned zero.
    """
    q = codes.to(torch.int32)
    if zero is not None:
        q = q - zero
    return q.float() * scale


def quantize_cells(
    cells: Tensor, bits: int, symmetric: bool, clip_ratio: float = 1.0
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Quantize each cell ``cells[..., :]`` (the last dim is one cell) on its own min/max grid.

    Returns signed ``(codes int8 [..., n], scale float32 [...], zero int32 [...] or None)``.
    """
    lo, hi = torch.aminmax(cells, dim=-1)
    scale, zero = scale_zero(lo, hi, bits, symmetric, clip_ratio)
    codes = encode(cells, scale[..., None], None if zero is None else zero[..., None], bits)
    return codes, scale, zero


def to_unsigned(codes: Tensor, zero: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Weight storage of an asymmetric grid: ``(uint8 codes + 2^(b-1), int32 zero + 2^(b-1))``."""
    half = 1 << (bits - 1)
    return (codes.to(torch.int32) + half).to(torch.uint8), zero + half
