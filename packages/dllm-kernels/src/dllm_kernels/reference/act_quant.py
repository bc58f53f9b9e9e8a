"""Numba reference for dynamic per-token activation quantization (the A in W8A8 / W4A8 / W4A4).

``quantize_per_token(x [M, K], bits, symmetric=True, clip_ratio=1.0)`` is the grid of
:mod:`dllm_kernels.reference.grid` with one cell per row (token):

* ``clip_ratio`` (0 < r <= 1) shrinks the row range (``lo = min(min(x), 0) * r``, ``hi = max(max(x), 0) * r``,
  float32 multiply) before the scale formula; values outside the clipped range saturate.
* Codes are the grid's signed ones, **always int8** in ``[-2^(b-1), 2^(b-1)-1]``, also when asymmetric, so
  one int8 GEMM handles both; the asymmetric zero point is the signed int32 ``zs`` (dequant
  ``(q - zs) * scale``). (:func:`~dllm_kernels.reference.quant.quantize` stores asymmetric grids unsigned
  instead; both describe the same grid.)

With ``clip_ratio=1`` the result equals ``quantize(x, QuantSpec(bits, symmetric, "token"))`` with the scale
flattened to ``[M]`` and, when asymmetric, codes and zero shifted back by ``2^(b-1)``.
"""

from __future__ import annotations

import numpy as np

from dllm_kernels.reference._checks import as_float2d, check_bits
from dllm_kernels.reference.grid import encode_kernel, minmax_kernel, scale_zero

__all__ = ["quantize_per_token"]


def quantize_per_token(
    x: np.ndarray, bits: int, symmetric: bool = True, clip_ratio: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Quantize each row of ``x [M, K]`` to ``bits``-bit signed codes.

    Returns:
        codes: int8 ``[M, K]`` in ``[-2^(b-1), 2^(b-1)-1]``.
        scale: float32 ``[M]``.
        zero: int32 ``[M]`` signed zero point if asymmetric, else None.
    """
    bits = check_bits(bits)
    x = as_float2d(x, "x")
    if not 0.0 < float(clip_ratio) <= 1.0:
        raise ValueError(f"clip_ratio must be in (0, 1], got {clip_ratio!r}")
    m, k = x.shape
    if k == 0:
        raise ValueError(f"x must have at least one column, got shape {x.shape}")
    lo = np.empty((m, 1), dtype=np.float32)
    hi = np.empty_like(lo)
    minmax_kernel(x, k, lo, hi)
    scale, zero = scale_zero(lo, hi, bits, symmetric, clip_ratio)
    half = 1 << (bits - 1)
    codes = np.empty((m, k), dtype=np.int8)
    zero_f = np.zeros_like(scale) if zero is None else zero.astype(np.float32)
    encode_kernel(x, scale, zero_f, np.float32(-half), np.float32(half - 1), codes)
    return codes, scale.reshape(m), None if zero is None else zero.reshape(m)
