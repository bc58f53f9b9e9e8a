"""Backend dispatcher: one validated front end for the Triton kernels and the Numba CPU references.

Every op takes ``backend: "auto" | "triton" | "numba"``. ``"auto"`` uses the environment variable
``DLLM_KERNELS_BACKEND`` (``triton`` or ``numba``) if set, else Triton for CUDA tensors and Numba for CPU
tensors. An explicit ``backend=`` argument wins over the environment variable. Triton on CPU tensors runs
the Triton interpreter and needs ``TRITON_INTERPRET=1`` set before triton is first imported (this is how
the CPU test suite checks the kernels); Numba needs CPU tensors.

Both backends get the same validation (shapes, dtypes, bit widths, contiguity, one device) and return the
same dtypes: ``wna16_gemm`` returns ``out_dtype`` (default ``x.dtype``), the integer GEMMs ``out_dtype``
(default float32). Value-range checks (unsigned zero points, 4-bit activation codes) run for CPU tensors
only: on CUDA they would force a device synchronisation on every call.

Numerical conventions are those of :mod:`dllm_kernels.reference` (see its module docstrings). Importing
this module never imports triton.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Literal

import torch

from dllm_kernels import ops_cpu
from dllm_kernels.reference.hadamard_matrix import supported_hadamard_size

__all__ = [
    "BACKEND_ENV",
    "Backend",
    "hadamard_quantize_per_token",
    "hadamard_transform",
    "int8_gemm",
    "quantize_per_token",
    "resolve_backend",
    "triton_available",
    "w4a4_gemm",
    "w4a8_gemm",
    "wna16_gemm",
]

Backend = Literal["auto", "triton", "numba"]
BACKEND_ENV = "DLLM_KERNELS_BACKEND"

_FLOATS = (torch.float16, torch.bfloat16, torch.float32)
_BITS = (2, 3, 4, 8)
_MAX_INT_K = (1 << 31) // (128 * 128)  # largest K whose int32 accumulator cannot overflow
_MAX_TRITON_NUMEL = 1 << 31  # the kernels use int32 offsets


def triton_available() -> bool:
    """True if the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


def _triton_ops() -> ModuleType:
    if not triton_available():
        raise RuntimeError(
            "backend='triton' needs the triton package (pip install triton); use backend='numba'"
        )
    import dllm_kernels.triton as ops

    return ops


def _run_triton(op: str, device: torch.device, *args: object) -> Any:
    """Call the Triton launcher ``op`` with ``device`` current (Triton launches on the current device)."""
    fn = getattr(_triton_ops(), op)
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        return fn(*args)


def resolve_backend(backend: str, tensors: Sequence[object]) -> Literal["triton", "numba"]:
    """The concrete backend for ``backend`` and the op's tensors (which must share one device).

    Non-tensor entries (None for optional inputs, wrong types caught later) are ignored. Raises
    ``ValueError`` for an unknown backend name, no tensor at all, mixed devices, or a backend that cannot
    run on the tensors' device, and ``RuntimeError`` if Triton is requested but not installed.
    """
    if backend not in ("auto", "triton", "numba"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'numba', got {backend!r}")
    present = [t for t in tensors if isinstance(t, torch.Tensor)]
    if not present:
        raise ValueError("expected torch.Tensor inputs, got none")
    devices = {t.device for t in present}
    if len(devices) > 1:
        raise ValueError(
            f"all tensors must be on one device, got {sorted(map(str, devices))}; move them with .to()"
        )
    device = present[0].device
    chosen = backend
    if chosen == "auto":
        env = os.environ.get(BACKEND_ENV, "").strip().lower()
        if env and env not in ("triton", "numba"):
            raise ValueError(f"{BACKEND_ENV} must be 'triton' or 'numba', got {env!r}; unset it for 'auto'")
        chosen = env or ("triton" if device.type == "cuda" else "numba")
    if chosen == "numba":
        if device.type != "cpu":
            raise ValueError(
                f"backend 'numba' runs on CPU tensors, got tensors on {device}; move them with .cpu() or use "
                "backend='triton'"
            )
        return "numba"
    ops = _triton_ops()
    if device.type == "cpu" and not ops.INTERPRET:
        raise ValueError(
            "backend 'triton' on CPU tensors needs the Triton interpreter: set TRITON_INTERPRET=1 before "
            "triton is imported, move the tensors to CUDA, or use backend='numba'"
        )
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"backend 'triton' supports CUDA (or interpreted CPU) tensors, got {device}")
    for t in present:
        if t.numel() >= _MAX_TRITON_NUMEL:
            raise ValueError(
                f"tensor of shape {list(t.shape)} has >= 2^31 elements; the Triton kernels use int32 "
                "offsets, split the call"
            )
    return "triton"


def _check_tensor(
    t: object, name: str, dtypes: tuple[torch.dtype, ...], shape: Sequence[int | None] | int
) -> torch.Tensor:
    """Check type, dtype, shape (a tuple with None wildcards, or an ndim) and contiguity of ``t``."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        allowed = "/".join(str(d).removeprefix("torch.") for d in dtypes)
        raise ValueError(f"{name} must have dtype {allowed}, got {t.dtype}")
    if isinstance(shape, int):
        if t.ndim != shape:
            raise ValueError(f"{name} must be {shape}-D, got shape {list(t.shape)}")
    elif t.ndim != len(shape) or any(s is not None and s != d for d, s in zip(t.shape, shape, strict=True)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (row-major); call .contiguous() first")
    return t


def _check_bits(bits: object, allowed: tuple[int, ...] = _BITS) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in allowed:
        raise ValueError(f"bits must be one of {allowed}, got {bits!r}")
    return bits


def _check_out_dtype(out_dtype: object) -> torch.dtype:
    for dtype in _FLOATS:
        if out_dtype == dtype:
            return dtype
    raise ValueError(f"out_dtype must be torch.float16, torch.bfloat16 or torch.float32, got {out_dtype!r}")


def _float_dtypes(backend: str) -> tuple[torch.dtype, ...]:
    """Float input dtypes: fp16/bf16/fp32, plus float64 for the Numba reference only."""
    return (*_FLOATS, torch.float64) if backend == "numba" else _FLOATS


def _check_clip(clip_ratio: object) -> float:
    if isinstance(clip_ratio, bool) or not isinstance(clip_ratio, int | float) or not 0.0 < clip_ratio <= 1.0:
        raise ValueError(f"clip_ratio must be a number in (0, 1], got {clip_ratio!r}")
    return float(clip_ratio)


def _check_symmetric(symmetric: object) -> bool:
    if not isinstance(symmetric, bool):
        raise ValueError(f"symmetric must be a bool, got {symmetric!r}")
    return symmetric


def wna16_gemm(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor | None,
    bits: int,
    group_size: int | None,
    *,
    out_dtype: torch.dtype | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """W{2,3,4,8}A16 group-wise GEMM ``x @ dequant(W)^T``.

    Args:
        x: ``[M, K]`` fp16/bf16/fp32 activations.
        w_packed: int32 ``[N, ceil(K*bits/32)]``, compressed-tensors ``pack-quantized`` (along K,
            offset-binary ``q + 2^(bits-1)``, dense across word boundaries).
        scale: ``[N, K/group_size]`` float scales.
        zero: int32 ``[N, K/group_size]`` unsigned zero points in ``[0, 2^bits - 1]``, or None (symmetric).
        bits: 2, 3, 4 or 8.
        group_size: K columns per scale (must divide K), or None for one scale per output channel.
        out_dtype: output dtype; default ``x.dtype``.
        backend: see the module docstring.

    Returns:
        ``[M, N]`` in ``out_dtype``: ``W[n, k] = float32(u[n, k] - z) * scale[n, k // group_size]`` with ``u``
        the stored code and ``z = zero[n, k // group_size]`` or ``2^(bits-1)``.
    """
    which = resolve_backend(backend, [x, w_packed, scale, zero])
    bits = _check_bits(bits)
    x = _check_tensor(x, "x", _float_dtypes(which), 2)
    k = x.shape[1]
    if k == 0:
        raise ValueError("x must have at least one column (K >= 1)")
    if group_size is None:
        group = k
    elif isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group_size must be a positive int or None (per-channel), got {group_size!r}")
    elif k % group_size:
        raise ValueError(f"group_size={group_size} must divide K={k}; pad K or pick another group size")
    else:
        group = group_size
    w_packed = _check_tensor(w_packed, "w_packed", (torch.int32,), (None, (k * bits + 31) // 32))
    n = w_packed.shape[0]
    scale = _check_tensor(scale, "scale", _float_dtypes(which), (n, k // group))
    if zero is not None:
        zero = _check_tensor(zero, "zero", (torch.int32,), (n, k // group))
        if zero.device.type == "cpu" and zero.numel() and (zero.min() < 0 or zero.max() >= 1 << bits):
            raise ValueError(f"zero must hold unsigned zero points in [0, {(1 << bits) - 1}] for bits={bits}")
    out_dtype = _check_out_dtype(x.dtype if out_dtype is None else out_dtype)
    if which == "numba":
        return ops_cpu.wna16_gemm(x, w_packed, scale, zero, bits, group_size).to(out_dtype)
    return _run_triton("wna16_gemm", x.device, x, w_packed, scale, zero, bits, group, out_dtype)


def _check_int_gemm(
    which: str, xq: torch.Tensor, x_scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, packed4: bool
) -> None:
    _check_tensor(xq, "xq", (torch.int8,), 2)
    m, k = xq.shape
    if k > _MAX_INT_K:
        raise ValueError(f"K={k} exceeds {_MAX_INT_K}, the largest K whose int32 accumulator cannot overflow")
    if packed4:
        _check_tensor(w, "w_packed", (torch.int32,), (None, (k + 7) // 8))
    else:
        _check_tensor(w, "wq", (torch.int8,), (None, k))
    _check_tensor(x_scale, "x_scale", _float_dtypes(which), (m,))
    _check_tensor(w_scale, "w_scale", _float_dtypes(which), (w.shape[0],))


_INT_GEMM_TRITON = {"int8_gemm": "int8_gemm", "w4a8_gemm": "w4a8_gemm", "w4a4_gemm": "w4a8_gemm"}
"""Triton kernel of each integer GEMM: W4A4 runs the W4A8 kernel (Hopper has no int4 MMA)."""


def _int_gemm(
    name: str,
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    out_dtype: torch.dtype,
    backend: Backend,
    activation_bits: int,
) -> torch.Tensor:
    """Validate and run the integer GEMM ``name`` (one of `_INT_GEMM_TRITON`) on the chosen backend."""
    which = resolve_backend(backend, [xq, x_scale, w, w_scale])
    _check_int_gemm(which, xq, x_scale, w, w_scale, packed4=name != "int8_gemm")
    if activation_bits == 4 and xq.device.type == "cpu" and xq.numel() and (xq.min() < -8 or xq.max() > 7):
        raise ValueError(
            f"{name} needs 4-bit activation codes in [-8, 7], got [{int(xq.min())}, {int(xq.max())}]; "
            "quantize with quantize_per_token(x, 4) or use w4a8_gemm"
        )
    out_dtype = _check_out_dtype(out_dtype)
    if which == "numba":
        return getattr(ops_cpu, name)(xq, x_scale, w, w_scale).to(out_dtype)
    return _run_triton(_INT_GEMM_TRITON[name], xq.device, xq, x_scale, w, w_scale, out_dtype)


def int8_gemm(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    *,
    out_dtype: torch.dtype = torch.float32,
    backend: Backend = "auto",
) -> torch.Tensor:
    """W8A8: int8 ``xq [M, K]`` x int8 ``wq [N, K]``, exact int32 accumulation, then
    ``(float32(acc) * x_scale[m]) * w_scale[n]``; returns ``[M, N]`` in ``out_dtype``.
    """
    return _int_gemm("int8_gemm", xq, x_scale, wq, w_scale, out_dtype, backend, activation_bits=8)


def w4a8_gemm(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    *,
    out_dtype: torch.dtype = torch.float32,
    backend: Backend = "auto",
) -> torch.Tensor:
    """W4A8: int8 ``xq [M, K]`` x symmetric 4-bit weights packed int32 ``[N, ceil(K/8)]`` (offset-binary
    ``q + 8``), unpacked to int8 in registers for the int8 MMA; scales as in :func:`int8_gemm`.
    """
    return _int_gemm("w4a8_gemm", xq, x_scale, w_packed, w_scale, out_dtype, backend, activation_bits=8)


def w4a4_gemm(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    *,
    out_dtype: torch.dtype = torch.float32,
    backend: Backend = "auto",
) -> torch.Tensor:
    """W4A4: :func:`w4a8_gemm` with 4-bit activation codes (int8 values in ``[-8, 7]``, e.g. from
    ``quantize_per_token(x, 4)``). Hopper has no int4 MMA, so this runs the int8 MMA path; the range is
    checked for CPU tensors only.
    """
    return _int_gemm("w4a4_gemm", xq, x_scale, w_packed, w_scale, out_dtype, backend, activation_bits=4)


def quantize_per_token(
    x: torch.Tensor,
    bits: int,
    symmetric: bool = True,
    clip_ratio: float = 1.0,
    *,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Dynamic per-token quantization of ``x [M, K]`` (K >= 1).

    Returns ``(codes int8 [M, K] in [-2^(b-1), 2^(b-1)-1], scale float32 [M], zero int32 [M] or None)``;
    the asymmetric zero point is signed (dequant ``(codes - zero) * scale``). Round half to even.
    """
    which = resolve_backend(backend, [x])
    bits = _check_bits(bits)
    symmetric = _check_symmetric(symmetric)
    clip_ratio = _check_clip(clip_ratio)
    x = _check_tensor(x, "x", _float_dtypes(which), 2)
    if x.shape[1] == 0:
        raise ValueError("x must have at least one column (K >= 1)")
    if which == "numba":
        return ops_cpu.quantize_per_token(x, bits, symmetric, clip_ratio)
    return _run_triton("quantize_per_token", x.device, x, bits, symmetric, clip_ratio)


def _check_hadamard_size(n: int) -> None:
    if not supported_hadamard_size(n):
        raise ValueError(
            f"no Hadamard matrix of size {n}: use a power of two or m * 2^k with a Paley order m "
            "(e.g. 12, 20, 28, 148: 768 = 12*64, 3584 = 28*128, 12288 = 12*1024, 18944 = 148*128)"
        )


def hadamard_transform(x: torch.Tensor, *, backend: Backend = "auto") -> torch.Tensor:
    """``x @ hadamard_matrix(n)`` along the last dim of ``x [..., n]`` (orthonormal); same shape and dtype."""
    which = resolve_backend(backend, [x])
    if not isinstance(x, torch.Tensor) or x.ndim == 0:
        raise ValueError("x must be a torch.Tensor with at least one dimension (the transformed last dim)")
    x = _check_tensor(x, "x", _float_dtypes(which), x.ndim)
    _check_hadamard_size(x.shape[-1])
    if which == "numba":
        return ops_cpu.hadamard_transform(x)
    return _run_triton("hadamard_transform", x.device, x)


def hadamard_quantize_per_token(
    x: torch.Tensor,
    bits: int,
    symmetric: bool = True,
    clip_ratio: float = 1.0,
    *,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``quantize_per_token(hadamard_transform(x), bits, symmetric, clip_ratio)`` for ``x [M, K]``; on Triton
    one fused kernel (rotation kept in fp32 registers, then quantized). Same outputs as
    :func:`quantize_per_token`.
    """
    which = resolve_backend(backend, [x])
    bits = _check_bits(bits)
    symmetric = _check_symmetric(symmetric)
    clip_ratio = _check_clip(clip_ratio)
    x = _check_tensor(x, "x", _float_dtypes(which), 2)
    _check_hadamard_size(x.shape[1])
    if which == "numba":
        return ops_cpu.hadamard_quantize_per_token(x, bits, symmetric, clip_ratio)
    return _run_triton("hadamard_quantize_per_token", x.device, x, bits, symmetric, clip_ratio)
