"""Numba CPU references: numpy arrays in, numpy arrays out; the ground truth every backend is tested against.

Modules and their conventions (documented in each module docstring):

* :mod:`.grid` - the integer min/max grid both quantizers build on (scale and zero point from a cell's
  range, codes, values, unsigned weight storage);
* :mod:`.quant` - spec-driven ``quantize`` / ``dequantize`` / ``fake_quantize`` (compressed-tensors' scale
  and rounding conventions, round half to even; integer specs, fp8 is torch-only);
* :mod:`.act_quant` - ``quantize_per_token`` (dynamic activation quantization, int8 codes);
* :mod:`.pack` - ``pack`` / ``unpack`` (compressed-tensors ``pack-quantized`` int32 layout), ``pack_rows``;
* :mod:`.gemm` - ``wna16_gemm``, ``int8_gemm``, ``grouped_int_gemm``, ``w4a8_gemm``, ``w4a4_gemm``;
* :mod:`.hadamard_matrix` / :mod:`.hadamard` - ``hadamard_matrix``, ``hadamard_transform``,
  ``hadamard_quantize_per_token``.
"""

from dllm_kernels.reference.act_quant import quantize_per_token
from dllm_kernels.reference.gemm import grouped_int_gemm, int8_gemm, w4a4_gemm, w4a8_gemm, wna16_gemm
from dllm_kernels.reference.hadamard import hadamard_quantize_per_token, hadamard_transform
from dllm_kernels.reference.hadamard_matrix import hadamard_matrix, supported_hadamard_size
from dllm_kernels.reference.pack import pack, pack_rows, unpack, unpack_rows
from dllm_kernels.reference.quant import dequantize, fake_quantize, quant_params, quantize

__all__ = [
    "dequantize",
    "fake_quantize",
    "grouped_int_gemm",
    "hadamard_matrix",
    "hadamard_quantize_per_token",
    "hadamard_transform",
    "int8_gemm",
    "pack",
    "pack_rows",
    "quant_params",
    "quantize",
    "quantize_per_token",
    "supported_hadamard_size",
    "unpack",
    "unpack_rows",
    "w4a4_gemm",
    "w4a8_gemm",
    "wna16_gemm",
]
