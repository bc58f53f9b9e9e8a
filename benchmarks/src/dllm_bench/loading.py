"""`load_any`: a plain checkpoint (``dllm_sampler.load``) or a quantized one (``dllm_weightquant``)."""

from __future__ import annotations

import json
from pathlib import Path

import dllm_sampler
import torch
from dllm_sampler import DiffusionLM
from dllm_weightquant import load_quantized

from dllm_bench.pipeline import restore_runtime

__all__ = ["is_quantized_folder", "load_any"]


def is_quantized_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder whose config.json carries a ``quantization_config``."""
    config = Path(path).expanduser() / "config.json"
    if not config.is_file():
        return False
    return "quantization_config" in json.loads(config.read_text(encoding="utf-8"))


def load_any(
    path_or_name: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> DiffusionLM:
    """A shipped model name, a plain checkpoint folder or a quantized checkpoint folder as a `DiffusionLM`.

    Quantized folders load with ``dllm_weightquant.load_quantized`` (packed weights on the low-bit kernels)
    and get back the online rotations, activation quantizers and V quantizers `dllm_bench` recorded;
    ``dtype`` then casts the unquantized tensors only.
    """
    if not is_quantized_folder(path_or_name):
        return dllm_sampler.load(path_or_name, dtype=dtype, device=device)
    dlm = restore_runtime(load_quantized(path_or_name, device=device), path_or_name)
    return dlm if dtype is None else dlm.to(dtype)
