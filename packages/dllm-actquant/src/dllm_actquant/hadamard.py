"""Hadamard rotations: size checks with actionable errors and the random Hadamard of QuaRot.

``dllm_kernels.hadamard_matrix(n)`` is orthonormal for powers of two and Kronecker sizes ``m * 2^k``
(m = 12, 20, 28, 36, 148, ...: every Paley order). QuaRot's R1 is ``diag(d) @ H`` with ``d`` random
signs: still orthogonal, and a random member of a family of rotations that all spread outliers evenly.
"""

from __future__ import annotations

import dllm_kernels
import torch
from torch import Tensor

__all__ = ["check_hadamard_size", "hadamard", "random_hadamard"]


def check_hadamard_size(n: int, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` when no Hadamard matrix of order ``n`` can be built."""
    if not isinstance(n, int) or n < 1 or not dllm_kernels.supported_hadamard_size(n):
        raise ValueError(
            f"no Hadamard matrix of order {n} ({what}); supported orders are 2^k and m * 2^k for a Paley "
            "order m (12, 20, 28, 36, 44, ..., 148, ...): choose another width, or use DuQuant's block "
            "rotations, which work for any width"
        )


def hadamard(n: int, what: str = "rotation") -> Tensor:
    """Orthonormal Hadamard ``[n, n]`` float64 (``x @ H`` is ``dllm_kernels.hadamard_transform(x)``)."""
    check_hadamard_size(n, what)
    return dllm_kernels.hadamard_matrix(n).to(torch.float64)


def random_hadamard(n: int, generator: torch.Generator, what: str = "rotation") -> Tensor:
    """``diag(d) @ H`` float64 ``[n, n]`` with ``d`` uniform random signs drawn from ``generator``."""
    h = hadamard(n, what)
    signs = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int64).to(torch.float64) * 2 - 1
    return signs[:, None] * h
