"""Argument checks of :mod:`dllm_kernels.dispatch`; each raises ``ValueError`` naming the fix.

They run before any backend, so every backend sees the same validated inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dllm_kernels._cells import scale_shape
from dllm_kernels.spec import QuantSpec

FLOATS = (torch.float16, torch.bfloat16, torch.float32)
BITS = (2, 3, 4, 8)


def check_type(t: object, name: str) -> torch.Tensor:
    """``t`` itself if it is a ``torch.Tensor``."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def check_tensor(
    t: object, name: str, dtypes: tuple[torch.dtype, ...], shape: Sequence[int | None] | int
) -> torch.Tensor:
    """Check type, dtype, shape (a tuple with None wildcards, or an ndim) and contiguity of ``t``."""
    t = _check_dtype_shape(t, name, dtypes, shape)
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (row-major); call .contiguous() first")
    return t


def _check_dtype_shape(
    t: object, name: str, dtypes: tuple[torch.dtype, ...], shape: Sequence[int | None] | int
) -> torch.Tensor:
    t = check_type(t, name)
    if t.dtype not in dtypes:
        allowed = "/".join(str(d).removeprefix("torch.") for d in dtypes)
        raise ValueError(f"{name} must have dtype {allowed}, got {t.dtype}")
    if isinstance(shape, int):
        if t.ndim != shape:
            raise ValueError(f"{name} must be {shape}-D, got shape {list(t.shape)}")
    elif t.ndim != len(shape) or any(s is not None and s != d for d, s in zip(t.shape, shape, strict=True)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(t.shape)}")
    return t


def check_any_strides(
    t: object, name: str, dtypes: tuple[torch.dtype, ...], shape: Sequence[int | None] | int
) -> torch.Tensor:
    """:func:`check_tensor` without the contiguity requirement: returns ``t.contiguous()``."""
    return _check_dtype_shape(t, name, dtypes, shape).contiguous()


def check_bits(bits: object, allowed: tuple[int, ...] = BITS) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in allowed:
        raise ValueError(f"bits must be one of {allowed}, got {bits!r}")
    return bits


def check_count(n: object, name: str) -> int:
    """A non-negative int (a column or row count)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{name} must be a non-negative int, got {n!r}")
    return n


def check_out_dtype(out_dtype: object) -> torch.dtype:
    for dtype in FLOATS:
        if out_dtype == dtype:
            return dtype
    raise ValueError(f"out_dtype must be torch.float16, torch.bfloat16 or torch.float32, got {out_dtype!r}")


def float_dtypes(backend: str) -> tuple[torch.dtype, ...]:
    """Float input dtypes: fp16/bf16/fp32, plus float64 except on Triton."""
    return FLOATS if backend == "triton" else (*FLOATS, torch.float64)


def check_clip(clip_ratio: object) -> float:
    if isinstance(clip_ratio, bool) or not isinstance(clip_ratio, int | float) or not 0.0 < clip_ratio <= 1.0:
        raise ValueError(f"clip_ratio must be a number in (0, 1], got {clip_ratio!r}")
    return float(clip_ratio)


def check_symmetric(symmetric: object) -> bool:
    if not isinstance(symmetric, bool):
        raise ValueError(f"symmetric must be a bool, got {symmetric!r}")
    return symmetric


def check_spec(spec: object) -> QuantSpec:
    if not isinstance(spec, QuantSpec):
        raise ValueError(f"spec must be a dllm_kernels.QuantSpec, got {type(spec).__name__}")
    return spec


def check_quant_input(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """A non-empty 2-D float ``x`` whose columns split into the spec's groups, contiguous, float64 rounded to
    float32 (every backend computes in float32)."""
    x = check_any_strides(x, "x", (*FLOATS, torch.float64), 2)
    if x.numel() == 0:
        raise ValueError(f"x must be non-empty, got shape {list(x.shape)}")
    scale_shape(spec, *x.shape)  # raises if group_size does not divide cols
    return x.float() if x.dtype == torch.float64 else x


def check_quantized(
    codes: object, scale: object, zero: object, spec: QuantSpec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The outputs of ``quantize(x, spec)``: codes ``[rows, cols]`` (int8 symmetric, uint8 asymmetric,
    float8_e4m3fn fp8), a float scale and an int32 zero point (asymmetric only) shaped by granularity."""
    if spec.is_fp8:
        dtype, kind = torch.float8_e4m3fn, "fp8"
    elif spec.symmetric:
        dtype, kind = torch.int8, "symmetric"
    else:
        dtype, kind = torch.uint8, "asymmetric"
    codes_t = check_type(codes, "codes")
    if codes_t.dtype != dtype:
        raise ValueError(
            f"codes must have dtype {str(dtype).removeprefix('torch.')} for this {kind} spec, "
            f"got {codes_t.dtype}"
        )
    codes_t = check_any_strides(codes_t, "codes", (dtype,), 2)
    want = scale_shape(spec, *codes_t.shape)
    scale_t = check_any_strides(scale, "scale", (*FLOATS, torch.float64), want)
    if spec.symmetric:
        if zero is not None:
            raise ValueError(f"zero must be None for this {kind} spec")
        return codes_t, scale_t, None
    if zero is None:
        raise ValueError("an asymmetric spec needs the int32 zero point returned by quantize")
    return codes_t, scale_t, check_any_strides(zero, "zero", (torch.int32,), want)


def check_codes(codes: object, bits: int) -> torch.Tensor:
    """2-D int8 (symmetric, in ``[-2^(b-1), 2^(b-1)-1]``) or uint8 (asymmetric, in ``[0, 2^b-1]``) codes.

    The range is checked on every device (on CUDA a synchronisation: packing is offline work), since an
    out-of-range code would corrupt its neighbours in the packed words.
    """
    t = check_any_strides(codes, "codes", (torch.int8, torch.uint8), 2)
    if t.dtype == torch.int8:
        lo, hi, kind = -(1 << (bits - 1)), (1 << (bits - 1)) - 1, "symmetric int8"
    else:
        lo, hi, kind = 0, (1 << bits) - 1, "asymmetric uint8"
    if t.numel():
        got_lo, got_hi = (int(v) for v in torch.aminmax(t.to(torch.int32)))
        if got_lo < lo or got_hi > hi:
            raise ValueError(
                f"codes ({kind}) must lie in [{lo}, {hi}] for bits={bits}, got values in [{got_lo}, {got_hi}]"
            )
    return t
