"""The fast CPU backend: Numba tile kernels (:mod:`.tiles`) feeding torch's CPU GEMMs (:mod:`.ops`), and the
Numba kernels of GPTQ's hot loops on CPU tensors (:mod:`.clip_search`, :mod:`.gptq_block`)."""

from __future__ import annotations

import functools

import torch

__all__ = ["native_bf16"]


@functools.cache
def native_bf16() -> bool:
    """True if torch's CPU GEMMs have native bfloat16 dot products here (AVX512-BF16 or AMX via oneDNN),
    where a bf16 GEMM is about twice as fast as a float32 one; False elsewhere (bf16 would be emulated)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
