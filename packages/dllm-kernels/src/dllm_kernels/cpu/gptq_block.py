"""Numba kernel of GPTQ's inner sweep over one block of columns, with every group's grid fixed in advance.

GPTQ (``dllm_weightquant.gptq``) walks the columns of ``W`` in blocks of ``B``. Inside a block, column ``i``
is rounded to its grid, its error is divided by ``U[i, i]`` and subtracted, scaled by ``U[i, j]``, from every
later column ``j`` of the block. Each output row is independent of the others, so the kernel splits the
rows into ``chunks`` ranges run in parallel, and inside one range runs the whole block: the same arithmetic
as the torch loop it replaces (per column one encode, decode, division and rank-1 update), without a
Python round trip per column. Works on ``W^T``: column ``i`` of the block is the contiguous row ``w1[i]``.
Inner loops index rows with unsigned integers so that LLVM vectorizes them (see :mod:`.tiles`).

The grid is :mod:`dllm_kernels.torch_grid`'s: ``code = rint(clamp(w / scale + zero, qmin, qmax))`` (IEEE
division, ties to even), value ``(code - zero) * scale`` in float32, cast to the working dtype.
"""

from __future__ import annotations

import numba
import numpy as np

from dllm_kernels.cpu.tiles import _RINT_MAGIC

__all__ = ["gptq_block"]


@numba.njit(cache=True, parallel=True, error_model="numpy")
def gptq_block(
    w1: np.ndarray,
    u1: np.ndarray,
    scale: np.ndarray,
    zero: np.ndarray,
    bits: int,
    chunks: int,
    codes: np.ndarray,
    err: np.ndarray,
) -> None:
    """Quantize the block ``w1 [B, out]`` (rows = columns of ``W``, float32 or float64) in place.

    ``u1 [B, B]`` is the block's part of the upper Cholesky factor of ``H^-1``; ``scale [B, out]`` float32
    and ``zero [B, out]`` float32 (signed integers; all 0 for a symmetric grid) are the grid of each
    column's group, row by row. On return ``w1[i]`` holds column ``i``'s grid values, ``codes [B, out]``
    int8 its signed codes and ``err [B, out]`` its scaled errors ``(w - q) / U[i, i]``, which the caller
    propagates to the columns after the block.
    """
    b, out = w1.shape
    half = np.float32(1 << (bits - 1))
    for c in numba.prange(chunks):
        lo = np.uint64(c * out // chunks)
        hi = np.uint64((c + 1) * out // chunks)
        for i in range(b):
            wi, ei, si, zi, ci = w1[i], err[i], scale[i], zero[i], codes[i]
            d = u1[i, i]
            for o in range(lo, hi):
                v = min(max(np.float32(wi[o]) / si[o] + zi[o], -half), half - np.float32(1))
                code = (v + _RINT_MAGIC) - _RINT_MAGIC
                q = (code - zi[o]) * si[o]
                ci[o] = np.int8(code)
                ei[o] = (wi[o] - q) / d
                wi[o] = q
            for j in range(i + 1, b):
                wj = w1[j]
                f = u1[i, j]
                for o in range(lo, hi):
                    wj[o] -= f * ei[o]
