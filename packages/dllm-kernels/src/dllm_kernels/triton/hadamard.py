"""Online Hadamard rotation along the last dim, optionally fused with per-token quantization.

``hadamard_transform(x) = x @ hadamard_matrix(n)`` with the reference's matrix
``kron(P_m, S_p) / sqrt(n)`` (Paley base ``P_m`` outer, Sylvester ``S_p`` inner; see
:mod:`dllm_kernels.reference.hadamard_matrix`). Since ``S_p = kron(S_{p/C}, S_C)``, the matrix is
``kron(A, B) / sqrt(n)`` with the dense ``A = kron(P_m, S_{p/C})`` of order ``R = n / C`` and ``B = S_C``.
Viewing a row as ``X [R, C]`` (row-major), the rotated row is ``A^T X B / sqrt(n)``: two ``tl.dot`` stages
per row (the first streamed over chunks of R), with ``A^T`` and ``B`` zero-padded to powers of two and
read from small cached global tensors (entries ±1, exact in every dot dtype).

One program per row: the whole rotated row ``[R_PAD, C_PAD]`` stays in registers, so the quantizing
variant computes the row min/max and the codes without a second pass over memory. The first stage runs in
the activation dtype (fp32 accumulate); the second multiplies the fp32 intermediate with three-pass TF32
(fp32-accurate) when compiled and IEEE fp32 under the interpreter. At n = 18944 (Dream down_proj; tile
256x128 on 16 warps) an offline sm_90 build spills about 0.5 KB of stack per thread: measure it first.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import triton
import triton.language as tl

from dllm_kernels.reference.hadamard_matrix import base_factor, sylvester_matrix
from dllm_kernels.triton._quant_math import encode, scale_zero
from dllm_kernels.triton._runtime import FP32_PRECISION, INTERPRET, fp32_dot

__all__ = ["MAX_TILE", "hadamard_quantize_per_token", "hadamard_transform", "tile_shape"]

MAX_TILE = 32768
"""Largest padded row tile ``R_PAD * C_PAD`` held in registers by one program (n up to 2^15 or 148*128)."""


@triton.jit
def _rotate_row(
    x_ptr, at_ptr, b_ptr, row, N, R, C,
    R_PAD: tl.constexpr, C_PAD: tl.constexpr, RB: tl.constexpr, DOT_FP32: tl.constexpr,
):  # fmt: skip
    """Unnormalized ``A^T X B`` of row ``row`` of x [rows, N] viewed [R, C]: fp32 [R_PAD, C_PAD], pads 0."""
    offs_a = tl.arange(0, R_PAD)
    offs_c = tl.arange(0, C_PAD)
    mask_c = offs_c < C
    u = tl.zeros((R_PAD, C_PAD), dtype=tl.float32)
    for r0 in range(0, R, RB):
        offs_r = r0 + tl.arange(0, RB)
        mask_x = (offs_r < R)[:, None] & mask_c[None, :]
        xr = tl.load(x_ptr + row * N + offs_r[:, None] * C + offs_c[None, :], mask=mask_x, other=0.0)
        at = tl.load(at_ptr + offs_a[:, None] * R_PAD + offs_r[None, :])
        if DOT_FP32:
            u = tl.dot(at, xr.to(tl.float32), u, input_precision=FP32_PRECISION)
        else:
            u = tl.dot(at.to(xr.dtype), xr, u)
    b = tl.load(b_ptr + offs_c[:, None] * C_PAD + offs_c[None, :])
    return tl.dot(u, b, input_precision=FP32_PRECISION)


@triton.jit
def _hadamard_kernel(
    x_ptr, at_ptr, b_ptr, y_ptr, N, R, C, norm,
    R_PAD: tl.constexpr, C_PAD: tl.constexpr, RB: tl.constexpr, DOT_FP32: tl.constexpr,
):  # fmt: skip
    """y[row] = hadamard_transform(x[row]) in y's dtype."""
    row = tl.program_id(0).to(tl.int64)
    y = _rotate_row(x_ptr, at_ptr, b_ptr, row, N, R, C, R_PAD, C_PAD, RB, DOT_FP32) * norm
    offs_a = tl.arange(0, R_PAD)
    offs_c = tl.arange(0, C_PAD)
    mask = (offs_a < R)[:, None] & (offs_c < C)[None, :]
    tl.store(y_ptr + row * N + offs_a[:, None] * C + offs_c[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _hadamard_quant_kernel(
    x_ptr, at_ptr, b_ptr, codes_ptr, scale_ptr, zero_ptr, N, R, C, norm, clip_ratio,
    R_PAD: tl.constexpr, C_PAD: tl.constexpr, RB: tl.constexpr, DOT_FP32: tl.constexpr,
    BITS: tl.constexpr, SYMMETRIC: tl.constexpr,
):  # fmt: skip
    """codes[row], scale[row], zero[row] = quantize_per_token(hadamard_transform(x[row]))."""
    row = tl.program_id(0).to(tl.int64)
    y = _rotate_row(x_ptr, at_ptr, b_ptr, row, N, R, C, R_PAD, C_PAD, RB, DOT_FP32) * norm
    # padded entries of y are exact zeros, so they do not change min(min(y), 0) or max(max(y), 0)
    lo = tl.min(tl.min(y, axis=1, keep_dims=True), axis=0, keep_dims=True)
    hi = tl.max(tl.max(y, axis=1, keep_dims=True), axis=0, keep_dims=True)
    lo = tl.minimum(lo, 0.0) * clip_ratio
    hi = tl.maximum(hi, 0.0) * clip_ratio
    scale, zs = scale_zero(lo, hi, BITS, SYMMETRIC)
    one = tl.arange(0, 1)[:, None]
    tl.store(scale_ptr + row + one, scale)
    if not SYMMETRIC:
        tl.store(zero_ptr + row + one, zs.to(tl.int32))
    codes = encode(y, scale, zs, BITS, SYMMETRIC)
    offs_a = tl.arange(0, R_PAD)
    offs_c = tl.arange(0, C_PAD)
    mask = (offs_a < R)[:, None] & (offs_c < C)[None, :]
    tl.store(codes_ptr + row * N + offs_a[:, None] * C + offs_c[None, :], codes, mask=mask)


def tile_shape(n: int) -> tuple[int, int, int, int]:
    """``(R, C, R_PAD, C_PAD)`` for a row of length n: ``n = R * C``, C a power of two dividing the
    Sylvester part of n (about sqrt(n), at most 128), both padded to powers of two >= 16.

    Raises ``ValueError`` for sizes without a Hadamard matrix or whose tile exceeds :data:`MAX_TILE`.
    """
    m = base_factor(n).shape[0]  # raises the reference's ValueError for unsupported n
    p = n // m
    c = min(p, 128, max(16, triton.next_power_of_2(math.isqrt(n - 1) + 1)))
    r = n // c
    r_pad, c_pad = max(16, triton.next_power_of_2(r)), max(16, c)
    if r_pad * c_pad > MAX_TILE:
        raise ValueError(
            f"hadamard size n={n} needs a {r_pad}x{c_pad} register tile, above the Triton kernel's limit of "
            f"{MAX_TILE} elements; split the last dim into blocks (e.g. head-wise) or use backend='numba'"
        )
    return r, c, r_pad, c_pad


@lru_cache(maxsize=32)
def _factors_np(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded float32 ``A^T [R_PAD, R_PAD]`` and ``B [C_PAD, C_PAD]`` (unnormalized ±1)."""
    r, c, r_pad, c_pad = tile_shape(n)
    a = np.kron(base_factor(n), sylvester_matrix(r // base_factor(n).shape[0]))
    at = np.zeros((r_pad, r_pad), dtype=np.float32)
    at[:r, :r] = a.T
    b = np.zeros((c_pad, c_pad), dtype=np.float32)
    b[:c, :c] = sylvester_matrix(c)
    return at, b


_DEVICE_FACTORS: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _factors(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_factors_np` as tensors on ``device``, cached per (n, device)."""
    key = (n, str(device))
    if key not in _DEVICE_FACTORS:
        at, b = _factors_np(n)
        _DEVICE_FACTORS[key] = (torch.from_numpy(at).to(device), torch.from_numpy(b).to(device))
    return _DEVICE_FACTORS[key]


def _launch_meta(n: int, dtype: torch.dtype) -> tuple[int, int, dict]:
    """``(R, C, launch meta-parameters)`` for rows of length n in ``dtype``."""
    r, c, r_pad, c_pad = tile_shape(n)
    tile = r_pad * c_pad
    rb = min(r_pad, 64) if INTERPRET else (16 if tile >= 16384 else min(r_pad, 32))
    warps = 4 if tile <= 4096 else (8 if tile <= 16384 else 16)
    meta = {"R_PAD": r_pad, "C_PAD": c_pad, "RB": rb, "DOT_FP32": fp32_dot(dtype), "num_warps": warps}
    return r, c, meta


def hadamard_transform(x: torch.Tensor) -> torch.Tensor:
    """Rotate each row of contiguous fp16/bf16/fp32 ``x [..., n]``; returns the same shape and dtype."""
    n = x.shape[-1]
    rows = x.numel() // n if n else 0
    y = torch.empty_like(x)
    if rows == 0:
        return y
    r, c, meta = _launch_meta(n, x.dtype)
    at, b = _factors(n, x.device)
    _hadamard_kernel[(rows,)](x, at, b, y, n, r, c, 1.0 / math.sqrt(n), **meta)
    return y


def hadamard_quantize_per_token(
    x: torch.Tensor, bits: int, symmetric: bool, clip_ratio: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Fused ``quantize_per_token(hadamard_transform(x))`` for contiguous ``x [M, K]``.

    Returns ``(codes int8 [M, K], scale float32 [M], zero int32 [M] or None)``.
    """
    m, n = x.shape
    codes = torch.empty((m, n), device=x.device, dtype=torch.int8)
    scale = torch.empty((m,), device=x.device, dtype=torch.float32)
    zero = None if symmetric else torch.empty((m,), device=x.device, dtype=torch.int32)
    if m == 0:
        return codes, scale, zero
    r, c, meta = _launch_meta(n, x.dtype)
    at, b = _factors(n, x.device)
    zero_arg = zero if zero is not None else scale
    _hadamard_quant_kernel[(m,)](
        x, at, b, codes, scale, zero_arg, n, r, c, 1.0 / math.sqrt(n), float(clip_ratio),
        **meta, BITS=bits, SYMMETRIC=symmetric, enable_fp_fusion=False,  # clip products rounded alone
    )  # fmt: skip
    return codes, scale, zero
