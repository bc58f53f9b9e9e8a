"""dllm_kernels: quantization primitives and kernels for dllmq (knows no model).

Public API (torch tensors in and out; CPU functions from :mod:`dllm_kernels.ops_cpu`, the Numba references
in :mod:`dllm_kernels.reference` take numpy arrays):

* :class:`QuantSpec` - validated quantization config, convertible to compressed-tensors ``QuantizationArgs``;
* ``quantize`` / ``dequantize`` / ``fake_quantize`` - spec-driven (int 2/3/4/8 bits, fp8 e4m3);
* ``pack`` / ``unpack`` / ``pack_rows`` / ``unpack_rows`` - compressed-tensors ``pack-quantized`` layout;
* ``quantize_per_token`` - dynamic per-token activation quantization;
* ``wna16_gemm``, ``int8_gemm``, ``w4a8_gemm``, ``w4a4_gemm`` - quantized GEMMs ``y = x @ W^T``;
* ``hadamard_matrix`` / ``hadamard_transform`` / ``supported_hadamard_size`` /
  ``hadamard_quantize_per_token``.

Importing this package never imports triton.
"""

from dllm_kernels.ops_cpu import (
    dequantize,
    fake_quantize,
    hadamard_matrix,
    hadamard_quantize_per_token,
    hadamard_transform,
    int8_gemm,
    pack,
    pack_rows,
    quantize,
    quantize_per_token,
    supported_hadamard_size,
    unpack,
    unpack_rows,
    w4a4_gemm,
    w4a8_gemm,
    wna16_gemm,
)
from dllm_kernels.spec import QuantSpec

__all__ = [
    "QuantSpec",
    "dequantize",
    "fake_quantize",
    "hadamard_matrix",
    "hadamard_quantize_per_token",
    "hadamard_transform",
    "int8_gemm",
    "pack",
    "pack_rows",
    "quantize",
    "quantize_per_token",
    "supported_hadamard_size",
    "unpack",
    "unpack_rows",
    "w4a4_gemm",
    "w4a8_gemm",
    "wna16_gemm",
]

# --- backend dispatcher (dllm_kernels.dispatch; appended by the Triton-kernel owner) ---------------------
# Rebinds the op names above to the dispatcher: same positional signatures plus keyword-only `backend=`
# ("auto": Triton for CUDA tensors, the ops_cpu/Numba functions above for CPU tensors) and `out_dtype=`.
# The dispatcher never imports triton until a Triton backend is actually used.
from dllm_kernels.dispatch import (
    hadamard_quantize_per_token,  # noqa: F811
    hadamard_transform,  # noqa: F811
    int8_gemm,  # noqa: F811
    quantize_per_token,  # noqa: F811
    resolve_backend,
    triton_available,
    w4a4_gemm,  # noqa: F811
    w4a8_gemm,  # noqa: F811
    wna16_gemm,  # noqa: F811
)

__all__ += ["resolve_backend", "triton_available"]
