"""The fast CPU backend: Numba tile kernels (:mod:`.tiles`) feeding torch's CPU GEMMs (:mod:`.ops`), and the
Numba kernels of GPTQ's hot loops on CPU tensors (:mod:`.clip_search`, :mod:`.gptq_block`).

Importing it starts Numba's threading layer, keeping torch's thread count. When the layer (OpenMP) first
starts inside a parallel kernel, it can put torch back on every core and undo an earlier
``torch.set_num_threads``: measured with the clip-search kernel, 1 -> 2 threads on a 2-core machine unless
``OMP_NUM_THREADS`` is set.
"""

from __future__ import annotations

import functools
import os

import numba
import torch

__all__ = ["ONEDNN_ISA_ENV", "native_bf16"]


def _start_numba_threads() -> None:
    threads = torch.get_num_threads()
    numba.get_num_threads()  # starts the threading layer now, outside any kernel
    torch.set_num_threads(threads)


_start_numba_threads()


ONEDNN_ISA_ENV = "ONEDNN_MAX_CPU_ISA"
"""oneDNN's cap on the instruction sets it uses (read once, at its start)."""

_BF16_ISAS = frozenset(
    {
        "AVX512_CORE_BF16",
        "AVX512_CORE_FP16",
        "AVX512_CORE_AMX",
        "AVX512_CORE_AMX_FP16",
        "AVX10_1_512",
        "AVX10_1_512_AMX",
        "AVX10_1_512_AMX_FP16",
        "ALL",
        "DEFAULT",
    }
)
"""Values of ``ONEDNN_MAX_CPU_ISA`` that leave oneDNN its bf16 dot products."""


@functools.cache
def native_bf16() -> bool:
    """True if torch's CPU GEMMs have native bfloat16 dot products here (AVX512-BF16 or AMX via oneDNN),
    where a bf16 GEMM is about twice as fast as a float32 one; False elsewhere (bf16 would be emulated),
    including when ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below those instructions."""
    cap = os.environ.get(ONEDNN_ISA_ENV, "").strip().upper()
    if cap and cap not in _BF16_ISAS:
        return False
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
