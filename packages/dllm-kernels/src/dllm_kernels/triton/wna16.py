"""W{2,3,4,8}A16 group-wise GEMM: ``out = x @ dequant(w).T`` with the weight dequantized inside the K loop.

Weight layout (compressed-tensors ``pack-quantized``): ``w_packed`` int32 ``[N, ceil(K*bits/32)]``, packed
along K; element ``k`` of a row starts at bit ``k*bits`` of the row's little-endian bit stream and holds
the unsigned code ``q + 2^(bits-1)``. The kernel reads the words as little-endian bytes; a 3-bit code can
straddle two bytes (and two words), and then both bytes are read.

Dequantization (as in :mod:`dllm_kernels.reference.gemm`): ``w[n, k] = float32(code - z) * scale[n, g]``
with ``g = k // group_size`` and ``z = zero[n, g]`` (unsigned zero point in ``[0, 2^bits - 1]``), or
``z = 2^(bits-1)`` without zero points (symmetric).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dllm_kernels.triton._runtime import FP32_PRECISION, INTERPRET, cdiv, fp32_dot, m_bucket

__all__ = ["wna16_gemm"]


def _gpu_configs() -> list[triton.Config]:
    """Hopper-oriented tile configs (small M: narrow BLOCK_M, wide BLOCK_N; large M: 128x128/256)."""
    shapes = [
        # (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages)
        (16, 64, 128, 4, 4),
        (16, 128, 64, 4, 4),
        (32, 64, 128, 4, 4),
        (32, 128, 64, 4, 4),
        (64, 128, 64, 4, 4),
        (64, 256, 64, 8, 3),
        (128, 128, 64, 8, 3),
        (128, 256, 64, 8, 3),
        (128, 128, 128, 8, 3),
        (256, 128, 64, 8, 3),
    ]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in shapes
    ]


def _prune(configs: list[triton.Config], named_args: dict, **_: object) -> list[triton.Config]:
    """Keep configs with ``BLOCK_K <= group_size`` (one scale row per K step) and BLOCK_M not far above M."""
    group_size, m_bkt = named_args["group_size"], named_args["M_BUCKET"]
    kept = [
        c
        for c in configs
        if (c.kwargs["BLOCK_K"] <= group_size or group_size < 32)
        and c.kwargs["BLOCK_M"] <= max(16, 2 * m_bkt)
    ]
    return kept or configs[:1]


_scale_row = triton.heuristics({"SCALE_ROW": lambda a: a["group_size"] % a["BLOCK_K"] == 0})


@_scale_row
@triton.jit
def _wna16_kernel(
    x_ptr,
    w_ptr,
    s_ptr,
    z_ptr,
    out_ptr,
    M,
    N,
    K,
    group_size,
    KW,
    NG,
    M_BUCKET,
    BITS: tl.constexpr,
    HAS_ZERO: tl.constexpr,
    SCALE_ROW: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """One [BLOCK_M, BLOCK_N] output tile; x [M, K], w [N, KW] uint8 (packed rows as bytes), scale/zero
    [N, NG], out [M, N].

    ``M_BUCKET`` (next power of two of M) is only an autotune key; ``SCALE_ROW`` is set by a heuristic.
    """
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    pids_per_group = GROUP_M * num_pid_n
    first_m = (pid // pids_per_group) * GROUP_M
    group_rows = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % pids_per_group) % group_rows
    pid_n = (pid % pids_per_group) // group_rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    code_mask: tl.constexpr = (1 << BITS) - 1
    offset: tl.constexpr = 1 << (BITS - 1)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        a = tl.load(
            x_ptr + offs_m[:, None] * K + offs_k[None, :],
            mask=mask_m[:, None] & mask_k[None, :],
            other=0.0,
            eviction_policy="evict_last",
        )
        mask_w = mask_k[:, None] & mask_n[None, :]
        # w is the little-endian byte view [N, KW bytes] of the packed words: code k starts at bit
        # (k * BITS) % 8 of byte (k * BITS) // 8 and, for 3 bits, may run into the next byte. A byte gather
        # moves 4x fewer bytes into shared memory than an int32-word gather.
        bit = offs_k * BITS
        byte_ptrs = w_ptr + offs_n[None, :] * KW + (bit >> 3)[:, None]
        v = tl.load(byte_ptrs, mask=mask_w, other=0, eviction_policy="evict_first").to(tl.int32)
        if 8 % BITS != 0:
            cross = ((bit & 7) + BITS > 8)[:, None]
            hi = tl.load(byte_ptrs + 1, mask=mask_w & cross, other=0, eviction_policy="evict_first")
            v = v | (hi.to(tl.int32) << 8)
        q = (v >> (bit & 7)[:, None]) & code_mask
        if SCALE_ROW:  # the whole K tile lies in one group: one scale (and zero) per column
            g_offs = (offs_n * NG + k0 // group_size)[None, :]
            g_mask = mask_n[None, :]
        else:
            g_offs = offs_n[None, :] * NG + (offs_k // group_size)[:, None]
            g_mask = mask_w
        s = tl.load(s_ptr + g_offs, mask=g_mask, other=0.0).to(tl.float32)
        z = tl.load(z_ptr + g_offs, mask=g_mask, other=0) if HAS_ZERO else offset
        w = tl.where(mask_w, (q - z).to(tl.float32) * s, 0.0)
        if DOT_FP32:
            acc = tl.dot(a.to(tl.float32), w, acc, input_precision=FP32_PRECISION)
        else:
            acc = tl.dot(a, w.to(a.dtype), acc)

    out_ptrs = out_ptr + offs_m[:, None] * N + offs_n[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


_wna16_tuned = triton.autotune(
    configs=_gpu_configs(),
    key=["M_BUCKET", "N", "K", "group_size", "BITS", "HAS_ZERO"],
    prune_configs_by={"early_config_prune": _prune},
)(_wna16_kernel)


def wna16_gemm(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor | None,
    bits: int,
    group_size: int,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """Launch the W{bits}A16 kernel on validated inputs (see :func:`dllm_kernels.dispatch.wna16_gemm`).

    Args:
        x: ``[M, K]`` fp16/bf16/fp32 activations, contiguous.
        w_packed: ``[N, ceil(K*bits/32)]`` int32 packed codes, contiguous (read as bytes).
        scale: ``[N, K/group_size]`` float scales, contiguous.
        zero: ``[N, K/group_size]`` int32 unsigned zero points or None (symmetric).
        bits: 2, 3, 4 or 8.
        group_size: columns of K per scale (K for per-channel scales).

    Returns:
        ``[M, N]`` in ``out_dtype``.
    """
    m, k = x.shape
    w = w_packed.view(torch.uint8)  # little-endian bytes of the words
    n, kw = w.shape
    ng = scale.shape[1]
    out = torch.empty((m, n), device=x.device, dtype=out_dtype)
    if m == 0 or n == 0:
        return out
    zero_arg = zero if zero is not None else scale
    args = (x, w, scale, zero_arg, out, m, n, k, group_size, kw, ng, m_bucket(m))
    meta = {"BITS": bits, "HAS_ZERO": zero is not None, "DOT_FP32": fp32_dot(x.dtype)}

    def grid(cfg: dict) -> tuple[int]:
        return (cdiv(m, cfg["BLOCK_M"]) * cdiv(n, cfg["BLOCK_N"]),)

    if INTERPRET:
        tiles = {
            "BLOCK_M": 32,
            "BLOCK_N": 32,
            "BLOCK_K": min(64, max(16, triton.next_power_of_2(group_size))),
        }
        _wna16_kernel[grid(tiles)](*args, **meta, **tiles, GROUP_M=8)
    else:
        _wna16_tuned[grid](*args, **meta)
    return out
