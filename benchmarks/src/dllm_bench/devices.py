"""`parse_device`: a ``--device`` value checked against the machine, with an error that says what to use."""

from __future__ import annotations

import torch

__all__ = ["parse_device"]


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
