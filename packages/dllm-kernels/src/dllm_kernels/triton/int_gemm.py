"""Integer-MMA GEMMs with per-token x per-channel scales: W8A8, W4A8 and W4A4.

``out[m, n] = x_scale[m] * w_scale[n] * sum_k xq[m, k] * wq[n, k]``, accumulated exactly in int32 by an
int8 ``tl.dot`` and scaled once in an fp32 epilogue. 4-bit weights arrive packed as int32
``[N, ceil(K/8)]`` (eight offset-binary nibbles ``q + 8`` per word, element ``k`` at bits ``4*(k % 8)``),
are read as little-endian bytes (two nibbles each) and unpacked to int8 in registers: Hopper has no int4
tensor-core MMA, so W4A8 and W4A4 both run on the int8 MMA. W4A4 differs only in its int8 activations,
which hold values in [-8, 7].
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dllm_kernels.triton._runtime import INTERPRET, cdiv, m_bucket

__all__ = ["int8_gemm", "w4a8_gemm"]


def _gpu_configs() -> list[triton.Config]:
    """Int8 tile configs (BLOCK_K >= 32, the int8 MMA's K step)."""
    shapes = [
        # (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages)
        (16, 64, 128, 4, 4),
        (32, 64, 128, 4, 4),
        (32, 128, 128, 4, 4),
        (64, 128, 128, 4, 4),
        (64, 256, 128, 8, 3),
        (128, 128, 128, 8, 3),
        (128, 256, 128, 8, 3),
        (256, 128, 128, 8, 3),
        (128, 128, 64, 4, 4),
    ]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in shapes
    ]


def _prune(configs: list[triton.Config], named_args: dict, **_: object) -> list[triton.Config]:
    """Drop configs whose BLOCK_M is far above the bucketed M."""
    m_bkt = named_args["M_BUCKET"]
    return [c for c in configs if c.kwargs["BLOCK_M"] <= max(16, 2 * m_bkt)] or configs[:1]


@triton.jit
def _int_gemm_kernel(
    x_ptr, xs_ptr, w_ptr, ws_ptr, out_ptr, M, N, K, KW, M_BUCKET,
    W_INT4: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    """One [BLOCK_M, BLOCK_N] tile. x [M, K] int8; w [N, KW] int8 (KW = K) or uint8 nibble pairs.

    ``M_BUCKET`` is only an autotune key.
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

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        a = tl.load(
            x_ptr + offs_m[:, None] * K + offs_k[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0
        )
        mask_w = mask_k[:, None] & mask_n[None, :]
        if W_INT4:  # w is the uint8 byte view: element k is nibble k % 2 of byte k // 2
            byte = tl.load(w_ptr + offs_n[None, :] * KW + (offs_k >> 1)[:, None], mask=mask_w, other=0)
            nib = (byte.to(tl.int32) >> ((offs_k & 1) * 4)[:, None]) & 15
            b = tl.where(mask_w, nib - 8, 0).to(tl.int8)
        else:
            b = tl.load(w_ptr + offs_n[None, :] * KW + offs_k[:, None], mask=mask_w, other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)

    xs = tl.load(xs_ptr + offs_m, mask=mask_m, other=0.0).to(tl.float32)
    ws = tl.load(ws_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    out = acc.to(tl.float32) * xs[:, None] * ws[None, :]
    out_ptrs = out_ptr + offs_m[:, None] * N + offs_n[None, :]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


_int_gemm_tuned = triton.autotune(
    configs=_gpu_configs(),
    key=["M_BUCKET", "N", "K", "W_INT4"],
    prune_configs_by={"early_config_prune": _prune},
)(_int_gemm_kernel)


def _launch(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    out_dtype: torch.dtype,
    w_int4: bool,
) -> torch.Tensor:
    m, k = xq.shape
    n, kw = w.shape
    out = torch.empty((m, n), device=xq.device, dtype=out_dtype)
    if m == 0 or n == 0:
        return out
    args = (xq, x_scale, w, w_scale, out, m, n, k, kw, m_bucket(m))

    def grid(cfg: dict) -> tuple[int]:
        return (cdiv(m, cfg["BLOCK_M"]) * cdiv(n, cfg["BLOCK_N"]),)

    if INTERPRET:
        tiles = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 64}
        _int_gemm_kernel[grid(tiles)](*args, W_INT4=w_int4, **tiles, GROUP_M=8)
    else:
        _int_gemm_tuned[grid](*args, W_INT4=w_int4)
    return out


def int8_gemm(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """W8A8 on validated inputs: xq ``[M, K]`` int8, x_scale ``[M]``, wq ``[N, K]`` int8, w_scale ``[N]``.

    Returns ``[M, N]`` in ``out_dtype``.
    """
    return _launch(xq, x_scale, wq, w_scale, out_dtype, w_int4=False)


def w4a8_gemm(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """W4A8 / W4A4 on validated inputs: w_packed ``[N, ceil(K/8)]`` int32 offset-binary nibbles.

    Returns ``[M, N]`` in ``out_dtype``.
    """
    return _launch(xq, x_scale, w_packed.view(torch.uint8), w_scale, out_dtype, w_int4=True)
