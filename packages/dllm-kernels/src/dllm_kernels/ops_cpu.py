"""Numba backend of the dispatcher: torch front end of the CPU references (:mod:`dllm_kernels.reference`).

Every function takes CPU ``torch.Tensor``s, converts floats to float32 numpy arrays (bf16/fp16 are upcast),
calls the reference, and returns tensors. ``hadamard_transform`` returns the input dtype; ``dequantize`` and
the GEMMs return float32. Shapes, dtypes and numerical conventions are those of the reference modules;
integer specs only (fp8 is the torch backend's, :mod:`dllm_kernels.ops_torch`). Call these through
:mod:`dllm_kernels.dispatch` (``backend="numba"``), which validates the arguments first.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dllm_kernels import reference as ref
from dllm_kernels.spec import QuantSpec

__all__ = [
    "dequantize",
    "hadamard_matrix",
    "hadamard_quantize_per_token",
    "hadamard_transform",
    "int8_gemm",
    "pack",
    "pack_rows",
    "quantize",
    "quantize_per_token",
    "unpack",
    "unpack_rows",
    "w4a4_gemm",
    "w4a8_gemm",
    "wna16_gemm",
]

_NP_INT = {torch.int8: np.int8, torch.uint8: np.uint8, torch.int32: np.int32}


def _tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.device.type != "cpu":
        raise ValueError(
            f"{name} is on {x.device}; ops_cpu needs CPU tensors (use dllm_kernels.dispatch on CUDA)"
        )
    return x.detach()


def _float_np(x: object, name: str) -> np.ndarray:
    t = _tensor(x, name)
    if not t.is_floating_point() or t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        raise ValueError(f"{name} must be a float16/bfloat16/float32/float64 tensor, got {t.dtype}")
    return t.to(torch.float64 if t.dtype == torch.float64 else torch.float32).contiguous().numpy()


def _int_np(x: object, name: str) -> np.ndarray:
    t = _tensor(x, name)
    if t.dtype not in _NP_INT:
        raise ValueError(f"{name} must be an int8/uint8/int32 tensor, got {t.dtype}")
    return t.contiguous().numpy()


def _opt(x: object | None, name: str) -> np.ndarray | None:
    return None if x is None else _int_np(x, name)


def _torch(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


def quantize(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Quantize ``x [rows, cols]`` with an int ``spec`` -> ``(codes int8 / uint8, scale float32, zero int32 or
    None)`` (see reference.quant)."""
    codes, scale, zero = ref.quantize(_float_np(x, "x"), spec)
    return _torch(codes), _torch(scale), _torch(zero)


def dequantize(
    codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, spec: QuantSpec
) -> torch.Tensor:
    """float32 ``[rows, cols]`` from the outputs of :func:`quantize`."""
    out = ref.dequantize(_int_np(codes, "codes"), _float_np(scale, "scale"), _opt(zero, "zero"), spec)
    return torch.from_numpy(out)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """int8 (symmetric) / uint8 (asymmetric) codes ``[rows, cols]`` -> int32 ``[rows, ceil(cols*b/32)]``."""
    return torch.from_numpy(ref.pack(_int_np(codes, "codes"), bits))


def unpack(packed: torch.Tensor, bits: int, n_cols: int, symmetric: bool = True) -> torch.Tensor:
    """Inverse of :func:`pack`: int8 codes if ``symmetric`` else uint8, ``[rows, n_cols]``."""
    return torch.from_numpy(ref.unpack(_int_np(packed, "packed"), bits, n_cols, symmetric))


def pack_rows(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack along dim 0 (compressed-tensors zero-point layout) -> int32 ``[ceil(rows*bits/32), cols]``."""
    return torch.from_numpy(ref.pack_rows(_int_np(codes, "codes"), bits))


def unpack_rows(packed: torch.Tensor, bits: int, n_rows: int, symmetric: bool = True) -> torch.Tensor:
    """Inverse of :func:`pack_rows`."""
    return torch.from_numpy(ref.unpack_rows(_int_np(packed, "packed"), bits, n_rows, symmetric))


def quantize_per_token(
    x: torch.Tensor, bits: int, symmetric: bool = True, clip_ratio: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``x [M, K]`` -> ``(codes int8 [M, K], scale float32 [M], zero int32 [M] or None)``."""
    codes, scale, zero = ref.quantize_per_token(_float_np(x, "x"), bits, symmetric, clip_ratio)
    return _torch(codes), _torch(scale), _torch(zero)


def wna16_gemm(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor | None,
    bits: int,
    group_size: int | None,
) -> torch.Tensor:
    """``x [M, K] @ dequant(W)^T`` -> float32 ``[M, N]`` (see reference.gemm.wna16_gemm)."""
    out = ref.wna16_gemm(
        _float_np(x, "x"),
        _int_np(w_packed, "w_packed"),
        _float_np(scale, "scale"),
        _opt(zero, "zero"),
        bits,
        group_size,
    )
    return torch.from_numpy(out)


def _int_gemm(
    reference: Callable[..., np.ndarray],
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    w_name: str,
) -> torch.Tensor:
    """Run an integer-GEMM reference on the tensors' NumPy views (``w_name`` names ``w`` in errors)."""
    x_np, w_np = _int_np(xq, "xq"), _int_np(w, w_name)
    x_scale_np, w_scale_np = _float_np(x_scale, "x_scale"), _float_np(w_scale, "w_scale")
    return torch.from_numpy(reference(x_np, x_scale_np, w_np, w_scale_np))


def int8_gemm(
    xq: torch.Tensor, x_scale: torch.Tensor, wq: torch.Tensor, w_scale: torch.Tensor
) -> torch.Tensor:
    """W8A8 int8 GEMM with int32 accumulation -> float32 ``[M, N]``."""
    return _int_gemm(ref.int8_gemm, xq, x_scale, wq, w_scale, "wq")


def w4a8_gemm(
    xq: torch.Tensor, x_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor
) -> torch.Tensor:
    """int8 activations x packed symmetric int4 weights -> float32 ``[M, N]``."""
    return _int_gemm(ref.w4a8_gemm, xq, x_scale, w_packed, w_scale, "w_packed")


def w4a4_gemm(
    xq: torch.Tensor, x_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor
) -> torch.Tensor:
    """:func:`w4a8_gemm` with 4-bit activation codes (int8 in ``[-8, 7]``)."""
    return _int_gemm(ref.w4a4_gemm, xq, x_scale, w_packed, w_scale, "w_packed")


def hadamard_matrix(n: int) -> torch.Tensor:
    """Orthonormal Hadamard matrix float64 ``[n, n]`` (see reference.hadamard_matrix)."""
    return torch.from_numpy(ref.hadamard_matrix(n))


def hadamard_transform(x: torch.Tensor) -> torch.Tensor:
    """``x @ hadamard_matrix(n)`` along the last dim, returned in the dtype of ``x``."""
    return torch.from_numpy(ref.hadamard_transform(_float_np(x, "x"))).to(x.dtype)


def hadamard_quantize_per_token(
    x: torch.Tensor, bits: int, symmetric: bool = True, clip_ratio: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``quantize_per_token(hadamard_transform(x))`` for ``x [M, K]``."""
    codes, scale, zero = ref.hadamard_quantize_per_token(_float_np(x, "x"), bits, symmetric, clip_ratio)
    return _torch(codes), _torch(scale), _torch(zero)
