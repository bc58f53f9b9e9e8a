"""Numba kernel of the MSE clip search on the integer grid (the CPU path of ``dllm_weightquant.grid``).

For every cell (a row of ``x [C, n]`` float32) and every shrink ratio ``p`` of ``ratios`` (largest first),
the grid of :mod:`dllm_kernels.torch_grid` is built from the shrunk range ``[p * min(lo, 0), p * max(hi, 0)]``
with the same float32 operations (IEEE division, rint half to even, a zero scale becomes float32 eps), the
cell is encoded and decoded on it, and the error ``sum |decode(encode(x)) - x|^norm`` is computed; the ratio
with the smallest error wins, the first of equal errors. One pass over the cell per ratio while it sits in L1,
instead of the torch path's seven passes per ratio over a chunk of cells. The per-cell helpers are ordinary
calls, not Numba-inlined: inlined into the parallel loop, their loops stop vectorizing (measured 2x slower).

Scales, zero points and, at ``norm = 2``, the per-element errors equal the torch path's bit for bit; the
error sums differ from torch's float32 reduction only in rounding (float32 sums reassociated into vector
lanes here), so the two paths can pick different ratios only where two ratios' errors agree to about float32
precision.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from dllm_kernels.cpu.tiles import _RINT_MAGIC, grid_params

__all__ = ["clip_search", "clip_search_cells"]


def clip_search(
    cells: torch.Tensor, bits: int, symmetric: bool, ratios: list[float], norm: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Best float32 ``scale [C]`` and signed int32 ``zero [C]`` (None if symmetric) of each row of the CPU
    tensor ``cells [C, n]`` over the shrink ``ratios`` (largest first, the first being 1.0)."""
    x = cells.detach().float().contiguous().numpy()
    lo, hi = (t.numpy() for t in torch.aminmax(torch.from_numpy(x), dim=-1))
    scale = np.empty(x.shape[0], dtype=np.float32)
    zero = np.zeros(x.shape[0], dtype=np.int32)
    chunks = max(1, min(x.shape[0], 16))
    r = np.asarray(ratios, dtype=np.float32)
    clip_search_cells(x, lo, hi, bits, symmetric, r, float(norm), chunks, scale, zero)
    return torch.from_numpy(scale), None if symmetric else torch.from_numpy(zero)


@numba.njit(cache=True, error_model="numpy")
def _abs_errors(row: np.ndarray, s: np.float32, z: np.float32, half: np.float32, buf: np.ndarray) -> None:
    """``buf[k] = |decode(encode(row[k])) - row[k]|`` on the grid ``(s, z)``."""
    for k in range(np.uint64(row.shape[0])):
        v = min(max(row[k] / s + z, -half), half - np.float32(1))
        buf[k] = abs(((v + _RINT_MAGIC) - _RINT_MAGIC - z) * s - row[k])


@numba.njit(cache=True, fastmath={"reassoc"})
def _sum_squares(buf: np.ndarray) -> np.float32:
    """``sum buf^2`` in float32, reassociated so that it vectorizes (only this reduction is)."""
    acc = np.float32(0)
    for k in range(np.uint64(buf.shape[0])):
        acc += buf[k] * buf[k]
    return acc


@numba.njit(cache=True, fastmath={"reassoc"})
def _sum_powers(buf: np.ndarray, norm: np.float32) -> np.float32:
    """``sum buf^norm`` in float32, reassociated."""
    acc = np.float32(0)
    for k in range(np.uint64(buf.shape[0])):
        acc += buf[k] ** norm
    return acc


@numba.njit(cache=True, parallel=True, error_model="numpy")
def clip_search_cells(
    x: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    bits: int,
    symmetric: bool,
    ratios: np.ndarray,
    norm: float,
    chunks: int,
    scale: np.ndarray,
    zero: np.ndarray,
) -> None:
    """The best ``scale [C]`` float32 and signed ``zero [C]`` int32 (0 when symmetric) of each cell of
    ``x [C, n]`` float32, whose minimum and maximum are ``lo, hi [C]``, over the shrink ``ratios [R]``
    float32 (``ratios[0] = 1``: plain min/max); errors ``sum |dequant - x|^norm``. ``chunks`` cell ranges
    run in parallel."""
    cells, n = x.shape
    half = np.float32(1 << (bits - 1))
    square = norm == 2.0
    power = np.float32(norm)
    for c in numba.prange(chunks):
        buf = np.empty(n, dtype=np.float32)
        for r in range(c * cells // chunks, (c + 1) * cells // chunks):
            best = np.inf
            row = x[r]
            for i in range(ratios.shape[0]):
                s, z = grid_params(lo[r], hi[r], ratios[i], bits, symmetric)
                _abs_errors(row, s, z, half, buf)
                err = _sum_squares(buf) if square else _sum_powers(buf, power)
                if err < best:
                    best = err
                    scale[r] = s
                    zero[r] = np.int32(z)
