"""Quantization on the integer grid, one scale (and zero point) per row: per-token and spec-driven.

Two passes over each block of rows: row min/max, then encode. Codes are int8 in the signed range
``[-2^(b-1), 2^(b-1)-1]`` also when asymmetric (then ``zero`` is the signed int32 zero point), exactly as
:func:`dllm_kernels.reference.quantize_per_token`, including ``clip_ratio`` (row min/max scaled by it).
Spec-driven :func:`quantize` runs the same kernel on the scale cells as rows.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dllm_kernels._cells import cell_size
from dllm_kernels.ops_torch import from_cells
from dllm_kernels.spec import QuantSpec
from dllm_kernels.triton._quant_math import encode, scale_zero
from dllm_kernels.triton._runtime import INTERPRET, cdiv, m_bucket

__all__ = ["quantize", "quantize_per_token"]


def _gpu_configs() -> list[triton.Config]:
    """Row-block configs: few rows, long K chunks (memory-bound, 16-byte accesses)."""
    shapes = [(1, 1024, 4), (1, 2048, 8), (2, 1024, 4), (4, 512, 4), (8, 256, 4), (4, 1024, 8)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_K": bk}, num_warps=w) for bm, bk, w in shapes]


@triton.jit
def _quant_rows_kernel(
    x_ptr, codes_ptr, scale_ptr, zero_ptr, M, K, clip_ratio, M_BUCKET,
    BITS: tl.constexpr, SYMMETRIC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Rows ``[pid*BLOCK_M, +BLOCK_M)`` of x [M, K] -> codes [M, K] int8, scale [M] f32, zero [M] int32."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    lo = tl.zeros((BLOCK_M,), dtype=tl.float32)
    hi = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = mask_m[:, None] & (offs_k < K)[None, :]
        x = tl.load(x_ptr + offs_m[:, None] * K + offs_k[None, :], mask=mask, other=0.0).to(tl.float32)
        lo = tl.minimum(lo, tl.min(x, axis=1))
        hi = tl.maximum(hi, tl.max(x, axis=1))
    scale, zs = scale_zero(lo * clip_ratio, hi * clip_ratio, BITS, SYMMETRIC)
    tl.store(scale_ptr + offs_m, scale, mask=mask_m)
    if not SYMMETRIC:
        tl.store(zero_ptr + offs_m, zs.to(tl.int32), mask=mask_m)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = mask_m[:, None] & (offs_k < K)[None, :]
        x = tl.load(x_ptr + offs_m[:, None] * K + offs_k[None, :], mask=mask, other=0.0).to(tl.float32)
        codes = encode(x, scale[:, None], zs[:, None], BITS, SYMMETRIC)
        tl.store(codes_ptr + offs_m[:, None] * K + offs_k[None, :], codes, mask=mask)


_quant_rows_tuned = triton.autotune(configs=_gpu_configs(), key=["M_BUCKET", "K", "BITS", "SYMMETRIC"])(
    _quant_rows_kernel
)


def quantize_per_token(
    x: torch.Tensor, bits: int, symmetric: bool, clip_ratio: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Launch on validated inputs (see :func:`dllm_kernels.dispatch.quantize_per_token`).

    Args:
        x: ``[M, K]`` fp16/bf16/fp32, contiguous, K >= 1.
        bits: 2, 3, 4 or 8.
        symmetric: no zero point if True.
        clip_ratio: in (0, 1]; scales the row min/max.

    Returns:
        ``(codes int8 [M, K], scale float32 [M], zero int32 [M] or None)``.
    """
    m, k = x.shape
    codes = torch.empty((m, k), device=x.device, dtype=torch.int8)
    scale = torch.empty((m,), device=x.device, dtype=torch.float32)
    zero = None if symmetric else torch.empty((m,), device=x.device, dtype=torch.int32)
    if m == 0:
        return codes, scale, zero
    args = (x, codes, scale, zero if zero is not None else scale, m, k, float(clip_ratio), m_bucket(m))
    # no fused multiply-add: ``hi * clip - lo * clip`` must round each product, as the reference does
    meta = {"BITS": bits, "SYMMETRIC": symmetric, "enable_fp_fusion": False}
    if INTERPRET:
        _quant_rows_kernel[(cdiv(m, 16),)](*args, **meta, BLOCK_M=16, BLOCK_K=64)
    else:
        _quant_rows_tuned[lambda cfg: (cdiv(m, cfg["BLOCK_M"]),)](*args, **meta)
    return codes, scale, zero


def quantize(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Launch on validated inputs (see :func:`dllm_kernels.dispatch.quantize`): an int ``spec`` on ``x``.

    Every scale cell is a contiguous run of ``x [rows, cols]`` (fp16/bf16/fp32, contiguous), so the cells
    are the rows of ``x.reshape(-1, cell_size)`` and the per-row kernel quantizes them (clip ratio 1).
    Returns ``(codes, scale, zero)`` in the spec's layout, asymmetric grids in the unsigned weight storage.
    """
    rows, cols = x.shape
    cells = x.reshape(-1, cell_size(spec, rows, cols))
    return from_cells(*quantize_per_token(cells, spec.bits, spec.symmetric, 1.0), spec, rows, cols)
