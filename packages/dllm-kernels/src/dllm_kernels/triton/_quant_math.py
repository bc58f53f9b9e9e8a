"""The integer min/max grid as ``@triton.jit`` helpers, bit-exact with the Numba reference.

The Triton implementation of the grid of :mod:`dllm_kernels.reference.grid` (the torch one is
:mod:`dllm_kernels.torch_grid`); callers pass the row range ``lo <= 0 <= hi`` already multiplied by the clip
ratio. All float32:

* symmetric: ``scale = max(|lo|, hi) / ((2^b - 1) / 2)``, ``code = rint(clamp(x / scale, qmin, qmax))``;
* asymmetric: ``scale = (hi - lo) / (2^b - 1)``, ``zs = rint(clamp(qmin - lo / scale, qmin, qmax))`` (0 for a
  zero scale), ``code = rint(clamp(x / scale + zs, qmin, qmax))``;
* a zero scale becomes float32 eps; ``qmin = -2^(b-1)``, ``qmax = 2^(b-1) - 1``; rint is round half to even.

Divisions use ``tl.math.div_rn`` (IEEE round-to-nearest): the plain ``/`` compiles to an approximate
division on NVIDIA GPUs. Kernels using these helpers launch with ``enable_fp_fusion=False``: a fused
multiply-add would round ``hi * clip - lo * clip`` once instead of after each product, and the scale
would differ from the reference's by an ulp. Round-half-even is built from ``floor`` because
``libdevice.rint`` does not exist under the interpreter.
"""

from __future__ import annotations

import triton
import triton.language as tl

EPS32 = tl.constexpr(1.1920928955078125e-07)


@triton.jit
def round_half_even(v):
    """Round float32 ``v`` (``|v| < 2^22``) to the nearest integer, ties to even; returns float32."""
    f = tl.floor(v)
    d = v - f
    f_odd = (f - 2.0 * tl.floor(f * 0.5)) == 1.0
    up = (d > 0.5) | ((d == 0.5) & f_odd)
    return f + up.to(tl.float32)


@triton.jit
def scale_zero(lo, hi, BITS: tl.constexpr, SYMMETRIC: tl.constexpr):
    """float32 ``(scale, signed zero)`` from row statistics ``lo <= 0 <= hi`` (zero is 0 when symmetric)."""
    qmin: tl.constexpr = -(1 << (BITS - 1))
    qmax: tl.constexpr = (1 << (BITS - 1)) - 1
    q_range: tl.constexpr = (1 << BITS) - 1
    if SYMMETRIC:
        scale = tl.math.div_rn(
            tl.maximum(tl.abs(lo), tl.abs(hi)), tl.full(lo.shape, q_range * 0.5, tl.float32)
        )
        zs = tl.zeros_like(scale)
    else:
        scale = tl.math.div_rn(hi - lo, tl.full(lo.shape, q_range * 1.0, tl.float32))
        safe = tl.where(scale == 0.0, 1.0, scale)
        zs = qmin - tl.math.div_rn(lo, safe)
        zs = round_half_even(tl.minimum(tl.maximum(zs, qmin * 1.0), qmax * 1.0))
        zs = tl.where(scale == 0.0, 0.0, zs)
    scale = tl.where(scale == 0.0, EPS32, scale)
    return scale, zs


@triton.jit
def encode(x, scale, zs, BITS: tl.constexpr, SYMMETRIC: tl.constexpr):
    """int8 codes of float32 ``x`` with broadcastable float32 ``scale`` and signed zero ``zs``."""
    qmin: tl.constexpr = -(1 << (BITS - 1))
    qmax: tl.constexpr = (1 << (BITS - 1)) - 1
    v = tl.math.div_rn(x, scale)
    if not SYMMETRIC:
        v = v + zs
    v = tl.minimum(tl.maximum(v, qmin * 1.0), qmax * 1.0)
    return round_half_even(v).to(tl.int8)
