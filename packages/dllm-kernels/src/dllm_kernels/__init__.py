"""dllm_kernels: quantization primitives and kernels for dllmq (knows no model).

Public API (torch tensors in and out; every primitive comes from :mod:`dllm_kernels.dispatch` and takes a
keyword-only ``backend="auto" | "numba" | "triton" | "torch"``; the Numba references in
:mod:`dllm_kernels.reference` take numpy arrays):

* :class:`QuantSpec` - validated quantization config, convertible to compressed-tensors ``QuantizationArgs``;
* ``quantize`` / ``dequantize`` / ``fake_quantize`` - spec-driven (int 2/3/4/8 bits, fp8 e4m3);
* ``pack`` / ``unpack`` / ``pack_rows`` / ``unpack_rows`` - compressed-tensors ``pack-quantized`` layout;
* ``quantize_per_token`` / ``fake_quantize_per_token`` - dynamic per-token activation quantization (codes, or
  their values), ``fake_quantize_per_token_each`` the values of several tensors (one CPU launch);
* ``wna16_gemm``, ``int8_gemm``, ``w4a8_gemm``, ``w4a4_gemm`` - quantized GEMMs ``y = x @ W^T``;
* ``hadamard_matrix`` / ``hadamard_transform`` / ``supported_hadamard_size`` /
  ``hadamard_quantize_per_token``;
* ``resolve_backend`` / ``triton_available`` - which backend a call would run on;
* :mod:`~dllm_kernels.torch_grid` - the integer grid as torch functions (scale and zero point from a cell's
  range, codes, values, unsigned weight storage) for code that quantizes inside a torch graph;
* :class:`GGUFSpec` and :mod:`~dllm_kernels.gguf_grid` - llama.cpp's Q8_0 / Q4_0 / Q4_K block grids in torch
  (scale rules with the format's fp16 / 6-bit rounding, codes, values, GGUF block bytes).

Importing this package never imports triton.
"""

from dllm_kernels import gguf_grid, torch_grid
from dllm_kernels.dispatch import (
    dequantize,
    fake_quantize,
    fake_quantize_per_token,
    fake_quantize_per_token_each,
    hadamard_matrix,
    hadamard_quantize_per_token,
    hadamard_transform,
    int8_gemm,
    pack,
    pack_rows,
    quantize,
    quantize_per_token,
    resolve_backend,
    supported_hadamard_size,
    triton_available,
    unpack,
    unpack_rows,
    w4a4_gemm,
    w4a8_gemm,
    wna16_gemm,
)
from dllm_kernels.gguf_grid import GGUFSpec
from dllm_kernels.spec import QuantSpec

__all__ = [
    "GGUFSpec",
    "QuantSpec",
    "dequantize",
    "fake_quantize",
    "fake_quantize_per_token",
    "fake_quantize_per_token_each",
    "gguf_grid",
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
    "torch_grid",
    "triton_available",
    "unpack",
    "unpack_rows",
    "w4a4_gemm",
    "w4a8_gemm",
    "wna16_gemm",
]
