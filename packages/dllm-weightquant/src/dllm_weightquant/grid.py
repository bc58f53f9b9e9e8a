"""The uniform integer grid of ``dllm_kernels`` in torch, with an optional MSE clip search.

The formulas reproduce ``dllm_kernels.quantize`` bit for bit (tests hold them to it), so codes made here
dequantize exactly like the kernels' and like compressed-tensors' decompressor:

* per cell (a row's group of columns): ``lo = min(min(w), 0)``, ``hi = max(max(w), 0)`` in float32;
* symmetric: ``scale = max(|lo|, hi) / ((2^b - 1) / 2)``, codes int8 in ``[-2^(b-1), 2^(b-1) - 1]``;
* asymmetric: ``scale = (hi - lo) / (2^b - 1)``, signed zero ``zs = rint(clamp(-2^(b-1) - lo / scale))``,
  codes uint8 ``clamp(rint(w / scale + zs)) + 2^(b-1)``; the zero point is stored unsigned (``zs + 2^(b-1)``,
  int32);
* a zero scale becomes float32 eps; rounding is half-to-even; dequantization is
  ``float32(code - zero) * scale``.

They are reimplemented here (instead of calling the kernels) because GPTQ needs to encode one column at
a time with a group's parameters and the clip search needs parameters from shrunk ranges, on any device.

``ClipSearch`` (GPTQ's "MSE observer"): for each cell try the shrunk ranges ``[p*lo, p*hi]`` for
``p = 1, 1 - 1/grid, ...`` down to ``1 - max_shrink`` (exclusive) and keep the one with the smallest
``sum |dequant(w) - w|^norm`` over the cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from dllm_calib import MethodConfig, check_positive_int, check_range
from torch import Tensor

__all__ = ["ClipSearch", "decode", "encode", "grid_params", "search_params"]

EPS32 = float(torch.finfo(torch.float32).eps)


@dataclass(frozen=True)
class ClipSearch(MethodConfig):
    """MSE clip search over shrink ratios of each cell's range.

    Attributes:
        grid: ratio step is 1/grid.
        max_shrink: the smallest ratio tried is above ``1 - max_shrink`` (0.8 -> down to 0.21 with grid 100).
        norm: the error exponent (2.0 = squared error; GPTQ's reference uses 2.4).
    """

    grid: int = 100
    max_shrink: float = 0.8
    norm: float = 2.0

    def validate(self) -> None:
        check_positive_int("ClipSearch", "grid", self.grid)
        check_range("ClipSearch", "max_shrink", self.max_shrink, 0.0, 1.0, hi_open=True)
        check_range("ClipSearch", "norm", self.norm, 0.0, 16.0, lo_open=True)

    def ratios(self) -> list[float]:
        """Shrink ratios tried, largest first (always starts with 1.0)."""
        return [1.0 - k / self.grid for k in range(max(1, int(self.max_shrink * self.grid)))]


def grid_params(lo: Tensor, hi: Tensor, bits: int, symmetric: bool) -> tuple[Tensor, Tensor | None]:
    """Scale (float32) and unsigned int32 zero point (None if symmetric) from per-cell ``lo``/``hi``.

    ``lo`` and ``hi`` have the same shape (any); the results have that shape.
    """
    half = 1 << (bits - 1)
    qmin, qmax = -half, half - 1
    q_range = float(qmax - qmin)
    lo = torch.clamp(lo.float(), max=0.0)
    hi = torch.clamp(hi.float(), min=0.0)
    zero: Tensor | None = None
    if symmetric:
        scale = torch.maximum(lo.abs(), hi.abs()) / (q_range / 2.0)
    else:
        scale = (hi - lo) / q_range
        zs = torch.clamp(qmin - lo / scale, qmin, qmax)
        zs = torch.where(scale == 0, torch.zeros_like(zs), zs).round()
        zero = zs.to(torch.int32) + half
    scale = torch.where(scale == 0, torch.full_like(scale, EPS32), scale)
    return scale, zero


def encode(w: Tensor, scale: Tensor, zero: Tensor | None, bits: int) -> Tensor:
    """Codes of ``w`` on the grid (``scale``/``zero`` broadcast against ``w``).

    Returns int8 codes (symmetric, ``zero`` None) or uint8 codes (asymmetric) with the shape of ``w``.
    """
    half = 1 << (bits - 1)
    v = w.float() / scale
    if zero is not None:
        v = v + (zero - half).float()
    v = torch.clamp(v, -half, half - 1).round()
    return v.to(torch.int8) if zero is None else (v + half).to(torch.uint8)


def decode(codes: Tensor, scale: Tensor, zero: Tensor | None) -> Tensor:
    """float32 values ``float32(codes - zero) * scale`` (zero 0 when None); broadcasting as in ``encode``."""
    q = codes.to(torch.int32)
    if zero is not None:
        q = q - zero
    return q.float() * scale


def search_params(
    cells: Tensor, bits: int, symmetric: bool, clip: ClipSearch | None
) -> tuple[Tensor, Tensor | None]:
    """Grid parameters for each cell of ``cells [..., n]`` (the last dim is one cell's values).

    Returns scale float32 ``[...]`` and unsigned int32 zero ``[...]`` (None if symmetric): min/max
    parameters when ``clip`` is None, else the clip search's best per cell.
    """
    x = cells.float()
    lo, hi = x.amin(dim=-1), x.amax(dim=-1)
    best_scale, best_zero = grid_params(lo, hi, bits, symmetric)
    if clip is None:
        return best_scale, best_zero
    best_err = _cell_error(x, best_scale, best_zero, bits, clip.norm)
    for p in clip.ratios()[1:]:
        scale, zero = grid_params(lo * p, hi * p, bits, symmetric)
        err = _cell_error(x, scale, zero, bits, clip.norm)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        if zero is not None and best_zero is not None:
            best_zero = torch.where(better, zero, best_zero)
    return best_scale, best_zero


def _cell_error(x: Tensor, scale: Tensor, zero: Tensor | None, bits: int, norm: float) -> Tensor:
    """``sum |dequant(x) - x|^norm`` over the last dim of ``x`` for per-cell ``scale``/``zero`` ``[...]``."""
    s = scale[..., None]
    z = None if zero is None else zero[..., None]
    return (decode(encode(x, s, z, bits), s, z) - x).abs().pow(norm).sum(-1)
