"""Numba reference for dynamic per-token activation quantization (the A in W8A8 / W4A8 / W4A4).

``quantize_per_token(x [M, K], bits, symmetric=True, clip_ratio=1.0)`` follows the conventions of
:mod:`dllm_kernels.reference.quant` with one scale per row (token) and two differences:

* ``clip_ratio`` (0 < r <= 1) shrinks the row statistics first: ``lo = min(min(x), 0) * r``,
  ``hi = max(max(x), 0) * r`` (float32 multiply), before the scale formula; values outside the clipped
  range saturate.
* Codes are **always int8 in the signed range** ``[-2^(b-1), 2^(b-1)-1]``, also when asymmetric, so one int8
  GEMM handles both; the asymmetric zero point is the signed int32 ``zs`` (dequant ``(q - zs) * scale``).
  (:func:`~dllm_kernels.reference.quant.quantize` stores asymmetric codes unsigned instead; both describe
  the same grid.)

With ``clip_ratio=1`` and ``symmetric=True`` the result equals
``quantize(x, QuantSpec(bits, True, "token"))`` with the scale flattened to ``[M]``.
"""

from __future__ import annotations

import numpy as np

from dllm_kernels.reference._checks import as_float2d, check_bits
from dllm_kernels.reference.quant import encode_kernel, minmax_kernel, scale_zero_from_minmax

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
    lo = np.minimum(lo, np.float32(0)) * np.float32(clip_ratio)
    hi = np.maximum(hi, np.float32(0)) * np.float32(clip_ratio)
    scale, zero_s = scale_zero_from_minmax(lo, hi, bits, symmetric)
    half = 1 << (bits - 1)
    codes = np.empty((m, k), dtype=np.int8)
    asym = zero_s is not None
    zs = zero_s if asym else np.zeros((1, 1), dtype=np.float32)
    encode_kernel(x, scale, zs, asym, np.float32(-half), np.float32(half - 1), 0, codes)
    zero = zero_s.reshape(m).astype(np.int32) if asym else None
    return codes, scale.reshape(m), zero
