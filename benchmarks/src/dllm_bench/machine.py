"""The machine a benchmark ran on, as its report records it: a speed table means little without the CPU (or
GPU) and the path the quantized layers took there.

On the CPU the weight-only kinds multiply bf16 tiles where the CPU has native bf16 dot products and float32
tiles elsewhere (`dllm_kernels.cpu.native_bf16`, which honours ``ONEDNN_MAX_CPU_ISA``); the two differ by
up to 2x against the float32 model (docs/benchmarks/cpu.md), so the report says which one ran.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["cpu_name", "machine"]


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (the first ``model name`` of Linux ``/proc/cpuinfo``), else what ``platform``
    knows, else ``"unknown CPU"``. Imports nothing heavy (the llama.cpp driver's reports use it too)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(device: torch.device) -> dict[str, Any]:
    """``{"cpu", "cpus", "torch", "numba", "weight_only_gemm", ["onednn_max_cpu_isa"], ["gpu"]}``: the CPU
    model and logical CPU count, the library versions, the precision of the weight-only kinds' GEMMs on the
    CPU (``"bfloat16"`` or ``"float32"``), oneDNN's instruction-set cap when one is set, and the GPU's name
    when ``device`` is a CUDA device."""
    import numba
    import torch
    from dllm_kernels.cpu import ONEDNN_ISA_ENV, native_bf16

    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "numba": numba.__version__,
        "weight_only_gemm": "bfloat16" if native_bf16() else "float32",
    }
    if os.environ.get(ONEDNN_ISA_ENV):
        info["onednn_max_cpu_isa"] = os.environ[ONEDNN_ISA_ENV]
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
