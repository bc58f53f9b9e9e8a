"""`parse_device`: a ``--device`` value checked against the machine, with an error that says what to use;
`compute_dtype`: the dtype a model runs in, by default the one that is fast on its device."""

from __future__ import annotations

import torch

__all__ = ["DTYPES", "compute_dtype", "default_dtype", "parse_device"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""``--dtype`` names and their torch dtypes."""


def parse_device(name: str) -> torch.device:
    """``name`` as a `torch.device` that exists here.

    Raises:
        ValueError: not a torch device string, or a CUDA device this machine does not have.
    """
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:1, ...)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asks for CUDA, but no CUDA device is available; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are present")
    return device


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bfloat16 on CUDA, float32 elsewhere: a CPU runs a bfloat16 forward several times slower than a
    float32 one (no native bf16 matmuls), while a GPU halves memory and runs faster in bfloat16."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def compute_dtype(name: str | None, device: torch.device | str) -> torch.dtype:
    """The dtype ``--dtype name`` asks for, or `default_dtype` of ``device`` when it is None."""
    return default_dtype(device) if name is None else DTYPES[name]
