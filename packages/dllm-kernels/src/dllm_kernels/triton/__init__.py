"""Triton GPU kernels of dllm_kernels (also runnable on CPU tensors under ``TRITON_INTERPRET=1``).

Importing this subpackage imports ``triton``; :mod:`dllm_kernels.dispatch` does so lazily, so
``import dllm_kernels`` works without triton. The launchers here expect inputs already validated by the
dispatcher (contiguous, right dtypes and shapes, one device); call them through
:mod:`dllm_kernels.dispatch` unless you validated yourself.

* :func:`wna16_gemm` - W{2,3,4,8}A16 group-wise GEMM, dequantization inside the K loop;
* :func:`int8_gemm`, :func:`w4a8_gemm` - int8-MMA GEMMs (W8A8; W4A8 and W4A4 with nibble-packed weights);
* :func:`quantize_per_token` - dynamic per-token activation quantization; :func:`quantize` - spec-driven
  integer quantization on the same kernel (scale cells as rows);
* :func:`hadamard_transform`, :func:`hadamard_quantize_per_token` - online Hadamard rotation, alone or fused
  with per-token quantization.
"""

from dllm_kernels.triton._runtime import INTERPRET
from dllm_kernels.triton.hadamard import hadamard_quantize_per_token, hadamard_transform
from dllm_kernels.triton.int_gemm import int8_gemm, w4a8_gemm
from dllm_kernels.triton.quant import quantize, quantize_per_token
from dllm_kernels.triton.wna16 import wna16_gemm

__all__ = [
    "INTERPRET",
    "hadamard_quantize_per_token",
    "hadamard_transform",
    "int8_gemm",
    "quantize",
    "quantize_per_token",
    "w4a8_gemm",
    "wna16_gemm",
]
