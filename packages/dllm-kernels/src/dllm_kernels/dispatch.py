"""Backend dispatcher: the one validated front end of every primitive (what ``dllm_kernels`` exports).

Every op takes a keyword-only ``backend: "auto" | "numba" | "cpu" | "triton" | "torch"``, among the backends
it has (``docs/architecture.md`` tabulates them):

* ``numba``: the CPU references (:mod:`dllm_kernels.ops_cpu` over :mod:`dllm_kernels.reference`);
* ``cpu``: the fast CPU GEMMs (:mod:`dllm_kernels.cpu`): packed weights unpacked tile by tile by parallel
  Numba kernels into torch's CPU GEMMs (bf16 or float32 for ``wna16_gemm``); the integer GEMMs of packed
  weights in one Numba launch on AVX512-VNNI CPUs (:mod:`dllm_kernels.cpu.vnni`), ``torch._int_mm``
  elsewhere, bit-identical to the references;
* ``triton``: the GPU kernels (:mod:`dllm_kernels.triton`), for CUDA tensors, or CPU tensors under
  ``TRITON_INTERPRET=1`` set before triton is first imported (how the CPU test suite checks the kernels);
* ``torch``: plain torch ops on any device (:mod:`dllm_kernels.ops_torch`), for the quantize and pack
  primitives; fp8 specs have only this one (numba has no fp8 type).

``"auto"`` uses the environment variable ``DLLM_KERNELS_BACKEND`` (``numba``, ``cpu``, ``triton`` or
``torch``) if set and the op has that backend, else for CPU tensors the fast ``cpu`` GEMMs where the op
has one and Numba otherwise, and for CUDA tensors Triton where the op has a Triton kernel, the torch
implementation where it does not. An explicit ``backend=`` argument wins over the environment variable;
naming a backend the op lacks raises.

Every backend gets the same validation (shapes, dtypes, bit widths, one device, contiguity where the op
requires it: the GEMMs and Hadamard ops do, the quantize and pack ops take any strides) and returns the same
dtypes and the same bits, except the float GEMM ``wna16_gemm`` (accumulation order differs, and the ``cpu``
backend computes bfloat16 activations in bfloat16 with bf16-rounded weights):
``wna16_gemm`` returns ``out_dtype`` (default ``x.dtype``), the integer GEMMs ``out_dtype`` (default
float32). Value-range checks of GEMM inputs (unsigned zero points, 4-bit activation codes) run for CPU
tensors only: on CUDA they would force a device synchronisation on every call.

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

from dllm_kernels import ops_cpu, ops_torch, torch_grid
from dllm_kernels._args import (
    check_any_strides,
    check_bits,
    check_clip,
    check_codes,
    check_count,
    check_out_dtype,
    check_quant_input,
    check_quantized,
    check_spec,
    check_symmetric,
    check_tensor,
    check_type,
    float_dtypes,
)
from dllm_kernels.cpu import ops as cpu_ops
from dllm_kernels.ops_cpu import hadamard_matrix
from dllm_kernels.reference.hadamard_matrix import supported_hadamard_size
from dllm_kernels.spec import QuantSpec

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "Backend",
    "dequantize",
    "fake_quantize",
    "fake_quantize_per_token",
    "fake_quantize_per_token_each",
    "fast_cpu_gemms",
    "hadamard_matrix",
    "hadamard_quantize_per_token",
    "hadamard_transform",
    "int8_gemm",
    "pack",
    "pack_rows",
    "quantize",
    "quantize_per_token",
    "resolve_backend",
    "supported_hadamard_size",
    "triton_available",
    "unpack",
    "unpack_rows",
    "w4a4_gemm",
    "w4a8_gemm",
    "wna16_gemm",
]

Backend = Literal["auto", "numba", "cpu", "triton", "torch"]
Concrete = Literal["numba", "cpu", "triton", "torch"]
BACKENDS: tuple[Concrete, ...] = ("numba", "cpu", "triton", "torch")
BACKEND_ENV = "DLLM_KERNELS_BACKEND"

_GEMMS: tuple[Concrete, ...] = ("numba", "cpu", "triton")
"""Backends of the GEMMs."""
_KERNELS: tuple[Concrete, ...] = ("numba", "triton")
"""Backends of the Hadamard ops."""
_QUANT: tuple[Concrete, ...] = ("numba", "triton", "torch")
"""Backends of quantize (integer specs)."""
_PER_TOKEN: tuple[Concrete, ...] = ("numba", "cpu", "triton", "torch")
"""Backends of quantize_per_token."""
_NO_TRITON: tuple[Concrete, ...] = ("numba", "torch")
"""Backends of dequantize and the pack ops (no Triton kernel: on CUDA they run the torch implementation)."""
_MAX_INT_K = (1 << 31) // (128 * 128)  # largest K whose int32 accumulator cannot overflow
_MAX_TRITON_NUMEL = 1 << 31  # the kernels use int32 offsets


def triton_available() -> bool:
    """True if the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


def _triton_ops() -> ModuleType:
    if not triton_available():
        raise RuntimeError(
            "backend='triton' needs the triton package (pip install triton); use backend='numba' or 'torch'"
        )
    import dllm_kernels.triton as ops

    return ops


def _run_triton(op: str, device: torch.device, *args: object) -> Any:
    """Call the Triton launcher ``op`` with ``device`` current (Triton launches on the current device)."""
    fn = getattr(_triton_ops(), op)
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        return fn(*args)


def _auto(device: torch.device, available: Sequence[Concrete]) -> Concrete:
    """Numba for CPU tensors, Triton for CUDA tensors, else (or if the op lacks that one) torch."""
    if device.type == "cpu" and "cpu" in available:
        return "cpu"
    if device.type == "cpu" and "numba" in available:
        return "numba"
    if device.type == "cuda" and "triton" in available:
        return "triton"
    return "torch" if "torch" in available else "numba"


def fast_cpu_gemms() -> bool:
    """True when ``backend="auto"`` runs the GEMMs of CPU tensors on the fast ``cpu`` backend, i.e. unless
    ``DLLM_KERNELS_BACKEND`` names ``numba`` or ``triton``: layers that prepared a `dllm_kernels.cpu`
    weight once use it only then, so the environment variable still selects the reference everywhere."""
    return os.environ.get(BACKEND_ENV, "").strip().lower() not in ("numba", "triton")


def resolve_backend(
    backend: str, tensors: Sequence[object], available: Sequence[Concrete] = _GEMMS, op: str = "this op"
) -> Concrete:
    """The concrete backend for ``backend`` and the op's tensors (which must share one device).

    ``available`` lists the backends of the op named ``op`` (for messages). Non-tensor entries (None for
    optional inputs, wrong types caught later) are ignored. Raises ``ValueError`` for an unknown backend
    name, a backend the op lacks, no tensor at all, mixed devices, or a backend that cannot run on the
    tensors' device, and ``RuntimeError`` if Triton is requested but not installed.
    """
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"backend must be 'auto', 'numba', 'cpu', 'triton' or 'torch', got {backend!r}")
    present = [t for t in tensors if isinstance(t, torch.Tensor)]
    if not present:
        raise ValueError("expected torch.Tensor inputs, got none")
    devices = {t.device for t in present}
    if len(devices) > 1:
        raise ValueError(
            f"all tensors must be on one device, got {sorted(map(str, devices))}; move them with .to()"
        )
    device = present[0].device
    if backend == "auto":
        env = os.environ.get(BACKEND_ENV, "").strip().lower()
        if env and env not in BACKENDS:
            raise ValueError(
                f"{BACKEND_ENV} must be 'numba', 'cpu', 'triton' or 'torch', got {env!r}; unset it for 'auto'"
            )
        chosen: Concrete = env if env in available else _auto(device, available)  # type: ignore[assignment]
    elif backend not in available:
        raise ValueError(f"{op} has no {backend!r} backend; use {', '.join(map(repr, available))} or 'auto'")
    else:
        chosen = backend  # type: ignore[assignment]
    if chosen in ("numba", "cpu"):
        if device.type != "cpu":
            raise ValueError(
                f"backend {chosen!r} runs on CPU tensors, got tensors on {device}; move them with .cpu() or "
                "use backend='triton'"
            )
    elif chosen == "triton":
        _check_triton_device(device, present)
    return chosen


def _check_triton_device(device: torch.device, tensors: list[torch.Tensor]) -> None:
    ops = _triton_ops()
    if device.type == "cpu" and not ops.INTERPRET:
        raise ValueError(
            "backend 'triton' on CPU tensors needs the Triton interpreter: set TRITON_INTERPRET=1 before "
            "triton is imported, move the tensors to CUDA, or use backend='numba'"
        )
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"backend 'triton' supports CUDA (or interpreted CPU) tensors, got {device}")
    for t in tensors:
        if t.numel() >= _MAX_TRITON_NUMEL:
            raise ValueError(
                f"tensor of shape {list(t.shape)} has >= 2^31 elements; the Triton kernels use int32 "
                "offsets, split the call"
            )


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
    which = resolve_backend(backend, [x, w_packed, scale, zero], _GEMMS, "wna16_gemm")
    bits = check_bits(bits)
    x = check_tensor(x, "x", float_dtypes(which), 2)
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
    w_packed = check_tensor(w_packed, "w_packed", (torch.int32,), (None, (k * bits + 31) // 32))
    n = w_packed.shape[0]
    scale = check_tensor(scale, "scale", float_dtypes(which), (n, k // group))
    if zero is not None:
        zero = check_tensor(zero, "zero", (torch.int32,), (n, k // group))
        if zero.device.type == "cpu" and zero.numel() and (zero.min() < 0 or zero.max() >= 1 << bits):
            raise ValueError(f"zero must hold unsigned zero points in [0, {(1 << bits) - 1}] for bits={bits}")
    out_dtype = check_out_dtype(x.dtype if out_dtype is None else out_dtype)
    if which == "numba":
        return ops_cpu.wna16_gemm(x, w_packed, scale, zero, bits, group_size).to(out_dtype)
    if which == "cpu":
        return cpu_ops.wna16_gemm(x, w_packed, scale, zero, bits, group_size).to(out_dtype)
    return _run_triton("wna16_gemm", x.device, x, w_packed, scale, zero, bits, group, out_dtype)


def _check_int_gemm(
    which: str, xq: torch.Tensor, x_scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, packed4: bool
) -> None:
    check_tensor(xq, "xq", (torch.int8,), 2)
    m, k = xq.shape
    if k > _MAX_INT_K:
        raise ValueError(f"K={k} exceeds {_MAX_INT_K}, the largest K whose int32 accumulator cannot overflow")
    if packed4:
        check_tensor(w, "w_packed", (torch.int32,), (None, (k + 7) // 8))
    else:
        check_tensor(w, "wq", (torch.int8,), (None, k))
    check_tensor(x_scale, "x_scale", float_dtypes(which), (m,))
    check_tensor(w_scale, "w_scale", float_dtypes(which), (w.shape[0],))


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
    which = resolve_backend(backend, [xq, x_scale, w, w_scale], _GEMMS, name)
    _check_int_gemm(which, xq, x_scale, w, w_scale, packed4=name != "int8_gemm")
    if activation_bits == 4 and xq.device.type == "cpu" and xq.numel() and (xq.min() < -8 or xq.max() > 7):
        raise ValueError(
            f"{name} needs 4-bit activation codes in [-8, 7], got [{int(xq.min())}, {int(xq.max())}]; "
            "quantize with quantize_per_token(x, 4) or use w4a8_gemm"
        )
    out_dtype = check_out_dtype(out_dtype)
    if which in ("numba", "cpu"):
        ops = ops_cpu if which == "numba" else cpu_ops
        return getattr(ops, name)(xq, x_scale, w, w_scale).to(out_dtype)
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


def _per_token_args(
    xs: dict[str, torch.Tensor], bits: int, symmetric: bool, clip_ratio: float, backend: Backend, op: str
) -> tuple[Concrete, list[torch.Tensor], int, bool, float]:
    """The backend and the checked arguments of a per-token quantization ``op`` of each ``x [M, K]`` of
    ``xs`` (keyed by the names the messages use)."""
    which = resolve_backend(backend, list(xs.values()), _PER_TOKEN, op)
    bits = check_bits(bits)
    symmetric = check_symmetric(symmetric)
    clip_ratio = check_clip(clip_ratio)
    checked = []
    for name, x in xs.items():
        x = check_tensor(x, name, float_dtypes(which), 2)
        if x.shape[1] == 0:
            raise ValueError(f"{name} must have at least one column (K >= 1)")
        checked.append(x)
    return which, checked, bits, symmetric, clip_ratio


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
    Backends: numba, cpu, triton, torch.
    """
    which, (x,), bits, symmetric, clip_ratio = _per_token_args(
        {"x": x}, bits, symmetric, clip_ratio, backend, "quantize_per_token"
    )
    return _quantize_per_token_on(which, x, bits, symmetric, clip_ratio)


def _quantize_per_token_on(
    which: Concrete, x: torch.Tensor, bits: int, symmetric: bool, clip_ratio: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`quantize_per_token` of checked arguments on the backend ``which``."""
    if which == "numba":
        return ops_cpu.quantize_per_token(x, bits, symmetric, clip_ratio)
    if which == "cpu":
        return cpu_ops.quantize_per_token(x, bits, symmetric, clip_ratio)
    if which == "torch":
        return ops_torch.quantize_per_token(x, bits, symmetric, clip_ratio)
    return _run_triton("quantize_per_token", x.device, x, bits, symmetric, clip_ratio)


def fake_quantize_per_token(
    x: torch.Tensor,
    bits: int,
    symmetric: bool = True,
    clip_ratio: float = 1.0,
    *,
    backend: Backend = "auto",
) -> torch.Tensor:
    """`quantize_per_token` of ``x [M, K]`` dequantized: float32 ``[M, K]`` values ``(codes - zero) *
    scale``, the same on every backend. The cpu backend runs both in one Numba pass
    (`dllm_kernels.cpu.tiles.fake_quantize_rows`); the others quantize, then `torch_grid.decode`."""
    (out,) = _fake_quantize_per_token({"x": x}, bits, symmetric, clip_ratio, backend)
    return out


def fake_quantize_per_token_each(
    xs: Sequence[torch.Tensor],
    bits: int,
    symmetric: bool = True,
    clip_ratio: float = 1.0,
    *,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, ...]:
    """`fake_quantize_per_token` of each ``x [M_i, K_i]`` of ``xs`` (one device, one setting): float32
    ``[M_i, K_i]`` each. The cpu backend quantizes them all in one parallel Numba launch (an attention's
    q and k), the others one after the other."""
    if isinstance(xs, torch.Tensor) or not xs:
        raise ValueError(
            "xs must be a non-empty sequence of tensors; for one tensor use fake_quantize_per_token"
        )
    named = {f"xs[{i}]": x for i, x in enumerate(xs)}
    return _fake_quantize_per_token(named, bits, symmetric, clip_ratio, backend)


def _fake_quantize_per_token(
    xs: dict[str, torch.Tensor], bits: int, symmetric: bool, clip_ratio: float, backend: Backend
) -> tuple[torch.Tensor, ...]:
    which, checked, bits, symmetric, clip_ratio = _per_token_args(
        xs, bits, symmetric, clip_ratio, backend, "fake_quantize_per_token"
    )
    if which == "cpu":
        return cpu_ops.fake_quantize_per_token(checked, bits, symmetric, clip_ratio)
    outs = []
    for x in checked:
        codes, scale, zero = _quantize_per_token_on(which, x, bits, symmetric, clip_ratio)
        outs.append(torch_grid.decode(codes, scale[:, None], None if zero is None else zero[:, None]))
    return tuple(outs)


def _check_hadamard_size(n: int) -> None:
    if not supported_hadamard_size(n):
        raise ValueError(
            f"no Hadamard matrix of size {n}: use a power of two or m * 2^k with a Paley order m "
            "(e.g. 12, 20, 28, 148: 768 = 12*64, 3584 = 28*128, 12288 = 12*1024, 18944 = 148*128)"
        )


def hadamard_transform(x: torch.Tensor, *, backend: Backend = "auto") -> torch.Tensor:
    """``x @ hadamard_matrix(n)`` along the last dim of ``x [..., n]`` (orthonormal); same shape and dtype."""
    which = resolve_backend(backend, [x], _KERNELS, "hadamard_transform")
    if not isinstance(x, torch.Tensor) or x.ndim == 0:
        raise ValueError("x must be a torch.Tensor with at least one dimension (the transformed last dim)")
    x = check_tensor(x, "x", float_dtypes(which), x.ndim)
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
    which = resolve_backend(backend, [x], _KERNELS, "hadamard_quantize_per_token")
    bits = check_bits(bits)
    symmetric = check_symmetric(symmetric)
    clip_ratio = check_clip(clip_ratio)
    x = check_tensor(x, "x", float_dtypes(which), 2)
    _check_hadamard_size(x.shape[1])
    if which == "numba":
        return ops_cpu.hadamard_quantize_per_token(x, bits, symmetric, clip_ratio)
    return _run_triton("hadamard_quantize_per_token", x.device, x, bits, symmetric, clip_ratio)


def _quantize_backends(spec: QuantSpec) -> tuple[Concrete, ...]:
    """Integer specs: numba, triton (the per-row kernel on the scale cells), torch; fp8: torch only."""
    return ("torch",) if spec.is_fp8 else _QUANT


def _op_name(op: str, spec: QuantSpec) -> str:
    return f"{op} of an fp8 spec" if spec.is_fp8 else op


def quantize(
    x: torch.Tensor, spec: QuantSpec, *, backend: Backend = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Quantize ``x [rows, cols]`` with ``spec`` (conventions of :mod:`dllm_kernels.reference.quant`).

    Args:
        x: non-empty 2-D fp16/bf16/fp32/float64 tensor, any strides (float64 is rounded to float32 first:
            all backends compute in float32); ``group_size`` must divide ``cols``.
        spec: the format. Integer specs run on numba, triton or torch, fp8 specs on torch only.
        backend: see the module docstring.

    Returns:
        codes: ``[rows, cols]``, int8 in ``[-2^(b-1), 2^(b-1)-1]`` (symmetric), uint8 in ``[0, 2^b-1]``
            (asymmetric) or float8_e4m3fn (fp8).
        scale: float32 ``[1]`` (tensor), ``[rows, 1]`` (channel, token) or ``[rows, cols/group_size]``.
        zero: int32 unsigned zero points in ``[0, 2^b-1]`` shaped like ``scale`` (asymmetric), else None.
    """
    spec = check_spec(spec)
    check_type(x, "x")
    which = resolve_backend(backend, [x], _quantize_backends(spec), _op_name("quantize", spec))
    x = check_quant_input(x, spec)
    if which == "numba":
        return ops_cpu.quantize(x, spec)
    if which == "torch":
        return ops_torch.quantize(x, spec)
    return _run_triton("quantize", x.device, x, spec)


def dequantize(
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor | None,
    spec: QuantSpec,
    *,
    backend: Backend = "auto",
) -> torch.Tensor:
    """float32 ``[rows, cols]`` values ``float32(codes - zero) * scale`` (fp8: ``codes.float() * scale``) from
    the outputs of :func:`quantize`. Backends: numba and torch (integer specs), torch (fp8)."""
    spec = check_spec(spec)
    check_type(codes, "codes")
    available = ("torch",) if spec.is_fp8 else _NO_TRITON
    which = resolve_backend(backend, [codes, scale, zero], available, _op_name("dequantize", spec))
    codes, scale, zero = check_quantized(codes, scale, zero, spec)
    if which == "numba":
        return ops_cpu.dequantize(codes, scale, zero, spec)
    return ops_torch.dequantize(codes, scale, zero, spec)


def fake_quantize(x: torch.Tensor, spec: QuantSpec, *, backend: Backend = "auto") -> torch.Tensor:
    """``dequantize(quantize(x, spec))`` in the dtype of ``x`` (same backends as :func:`quantize`; after a
    Triton quantize the values come from the torch dequantize)."""
    spec = check_spec(spec)
    check_type(x, "x")
    which = resolve_backend(backend, [x], _quantize_backends(spec), _op_name("fake_quantize", spec))
    codes, scale, zero = quantize(x, spec, backend=which)
    values = dequantize(codes, scale, zero, spec, backend="numba" if which == "numba" else "torch")
    return values.to(x.dtype)


def pack(codes: torch.Tensor, bits: int, *, backend: Backend = "auto") -> torch.Tensor:
    """Pack codes ``[rows, cols]`` along the last dim (compressed-tensors ``pack-quantized``, see
    :mod:`dllm_kernels.reference.pack`): int8 symmetric codes are stored offset-binary ``q + 2^(b-1)``, uint8
    asymmetric ones as they are. Returns int32 ``[rows, ceil(cols * bits / 32)]``. Backends: numba, torch.
    """
    bits = check_bits(bits)
    check_type(codes, "codes")
    which = resolve_backend(backend, [codes], _NO_TRITON, "pack")
    codes = check_codes(codes, bits)
    return ops_cpu.pack(codes, bits) if which == "numba" else ops_torch.pack(codes, bits)


def unpack(
    packed: torch.Tensor, bits: int, n_cols: int, symmetric: bool = True, *, backend: Backend = "auto"
) -> torch.Tensor:
    """Inverse of :func:`pack`: int32 ``[rows, ceil(n_cols * bits / 32)]`` -> ``[rows, n_cols]`` int8 codes
    (``symmetric``) or the stored uint8 values. Backends: numba, torch."""
    bits = check_bits(bits)
    n_cols = check_count(n_cols, "n_cols")
    symmetric = check_symmetric(symmetric)
    check_type(packed, "packed")
    which = resolve_backend(backend, [packed], _NO_TRITON, "unpack")
    packed = check_any_strides(packed, "packed", (torch.int32,), (None, (n_cols * bits + 31) // 32))
    if which == "numba":
        return ops_cpu.unpack(packed, bits, n_cols, symmetric)
    return ops_torch.unpack(packed, bits, n_cols, symmetric)


def pack_rows(codes: torch.Tensor, bits: int, *, backend: Backend = "auto") -> torch.Tensor:
    """:func:`pack` along dim 0 (compressed-tensors' zero-point layout): ``[rows, cols]`` -> int32
    ``[ceil(rows * bits / 32), cols]``. Backends: numba, torch."""
    bits = check_bits(bits)
    check_type(codes, "codes")
    which = resolve_backend(backend, [codes], _NO_TRITON, "pack_rows")
    codes = check_codes(codes, bits)
    return ops_cpu.pack_rows(codes, bits) if which == "numba" else ops_torch.pack_rows(codes, bits)


def unpack_rows(
    packed: torch.Tensor, bits: int, n_rows: int, symmetric: bool = True, *, backend: Backend = "auto"
) -> torch.Tensor:
    """Inverse of :func:`pack_rows`: int32 ``[ceil(n_rows * bits / 32), cols]`` -> ``[n_rows, cols]``.
    Backends: numba, torch."""
    bits = check_bits(bits)
    n_rows = check_count(n_rows, "n_rows")
    symmetric = check_symmetric(symmetric)
    check_type(packed, "packed")
    which = resolve_backend(backend, [packed], _NO_TRITON, "unpack_rows")
    packed = check_any_strides(packed, "packed", (torch.int32,), ((n_rows * bits + 31) // 32, None))
    if which == "numba":
        return ops_cpu.unpack_rows(packed, bits, n_rows, symmetric)
    return ops_torch.unpack_rows(packed, bits, n_rows, symmetric)
