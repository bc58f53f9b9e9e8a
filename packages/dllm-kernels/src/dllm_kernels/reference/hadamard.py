"""Numba reference for the (online) Hadamard transform along the last dim, and Hadamard + quantization.

``hadamard_transform(x) == x @ hadamard_matrix(n)`` for ``x [..., n]``. With ``n = m * p`` the row is viewed
as ``X [m, p]`` (Paley index outer) and ``x @ kron(P_m, S_p) = P_m^T X S_p``: a fast Walsh-Hadamard
butterfly (``p log p`` adds) on each of the m segments, then a dense ``m x m`` stage across segments,
computed in float64 and scaled once by ``1/sqrt(n)``. Output dtype: float64 for float64 input, else
float32.

``hadamard_quantize_per_token(x, bits, ...) = quantize_per_token(hadamard_transform(x), bits, ...)``: the
reference for the fused Triton kernel (rotation rounded to float32 before quantizing).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from dllm_kernels.reference._checks import FLOAT_DTYPES, as_float2d
from dllm_kernels.reference.act_quant import quantize_per_token
from dllm_kernels.reference.hadamard_matrix import base_factor, hadamard_base, supported_hadamard_size

__all__ = ["hadamard_quantize_per_token", "hadamard_transform", "supported_hadamard_size"]


@numba.njit(cache=True, parallel=True)
def _hadamard_kernel(x: np.ndarray, base: np.ndarray, norm: float, out: np.ndarray) -> None:
    """out[r] = (x[r] viewed [m, p]) -> base^T @ (FWHT rows) * norm; x, out [rows, m*p]."""
    rows, n = x.shape
    m = base.shape[0]
    p = n // m
    for r in numba.prange(rows):
        buf = np.empty(n, dtype=np.float64)
        for i in range(n):
            buf[i] = x[r, i]
        h = 1
        while h < p:
            for seg in range(m):
                start = seg * p
                for blk in range(start, start + p, 2 * h):
                    for i in range(blk, blk + h):
                        a = buf[i]
                        b = buf[i + h]
                        buf[i] = a + b
                        buf[i + h] = a - b
            h *= 2
        if m == 1:
            for i in range(n):
                out[r, i] = buf[i] * norm
        else:
            col = np.empty(m, dtype=np.float64)
            for j in range(p):
                for a in range(m):
                    acc = 0.0
                    for i in range(m):
                        acc += base[i, a] * buf[i * p + j]
                    col[a] = acc
                for a in range(m):
                    out[r, a * p + j] = col[a] * norm


def hadamard_transform(x: np.ndarray) -> np.ndarray:
    """``x @ hadamard_matrix(n)`` along the last dim of ``x [..., n]`` (orthonormal, so norms are kept).

    Raises ``ValueError`` if n has no supported Hadamard matrix (see ``supported_hadamard_size``).
    """
    if not isinstance(x, np.ndarray) or x.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"x must be a float16/32/64 numpy array, got {type(x).__name__}"
            + (f" of dtype {x.dtype}" if isinstance(x, np.ndarray) else "")
        )
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (the transformed last dim)")
    n = x.shape[-1]
    if hadamard_base(n) is None:
        base_factor(n)  # raises the descriptive ValueError
    out_dtype = np.float64 if x.dtype == np.float64 else np.float32
    flat = np.ascontiguousarray(x.reshape(-1, n), dtype=out_dtype)
    out = np.empty_like(flat)
    _hadamard_kernel(flat, base_factor(n), 1.0 / math.sqrt(n), out)
    return out.reshape(x.shape)


def hadamard_quantize_per_token(
    x: np.ndarray, bits: int, symmetric: bool = True, clip_ratio: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Rotate each row of ``x [M, K]`` by ``hadamard_matrix(K)`` (float32 result), then per-token quantize.

    Returns the same ``(codes int8 [M, K], scale float32 [M], zero int32 [M] or None)`` as
    ``quantize_per_token``.
    """
    x = as_float2d(x, "x")
    return quantize_per_token(hadamard_transform(x), bits, symmetric, clip_ratio)
