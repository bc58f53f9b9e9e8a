"""Launch-time helpers shared by the Triton kernels: interpreter detection, M bucketing, dot dtypes.

``TRITON_INTERPRET=1`` must be set before ``triton`` is first imported; :data:`INTERPRET` reads it once at
import time. Under the interpreter every launcher uses one fixed small config (no autotuning) and runs
bf16 data through fp32 dots, because the interpreter's bf16 ``tl.dot`` is silently wrong.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def m_bucket(m: int) -> int:
    """Autotune bucket for the token count ``m``: the next power of two (at least 16).

    In a dLLM the sequence length changes with every prompt; keying the autotuner on raw M would re-tune
    for every length.
    """
    return max(16, triton.next_power_of_2(m))


def fp32_dot(dtype: torch.dtype) -> bool:
    """True if ``tl.dot`` on activations of ``dtype`` runs in fp32 (fp32 data; bf16 under the interpreter)."""
    return dtype == torch.float32 or (INTERPRET and dtype == torch.bfloat16)


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative ints."""
    return -(-a // b)


FP32_PRECISION = tl.constexpr("ieee" if INTERPRET else "tf32x3")
"""``input_precision`` of fp32 ``tl.dot``: three-pass TF32 (fp32-accurate) compiled, IEEE interpreted."""
