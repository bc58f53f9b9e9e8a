"""``GGUFWeight``: a Linear weight stored as llama.cpp GGUF blocks (Q8_0, Q4_0, Q4_K).

The block bytes are the one source of truth: the GGUF export writes them as they are, and
:meth:`GGUFWeight.dequantize` decodes the same bytes (``dllm_kernels.gguf_grid.unpack_rows``), so what a
quantizer optimized, what dllmq runs and what llama.cpp reads are the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from dllm_kernels import gguf_grid
from torch import Tensor

__all__ = ["GGUFWeight"]


@dataclass(frozen=True, eq=False)
class GGUFWeight:
    """A ``[out, in]`` weight as GGUF blocks (CPU tensors).

    Attributes:
        data: uint8 ``[out, in / values_per_block * bytes_per_block]``, the rows' blocks in ggml's layout.
        gguf_type: ``"Q8_0"``, ``"Q4_0"`` or ``"Q4_K"``.
        shape: ``(out, in)``.
    """

    data: Tensor
    gguf_type: str
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        if self.gguf_type not in gguf_grid.GGUF_TYPES:
            raise ValueError(f"gguf_type must be one of {gguf_grid.GGUF_TYPES}, got {self.gguf_type!r}")
        out, inp = self.shape
        gguf_grid.check_row(self.gguf_type, inp, "GGUFWeight")
        per, size = gguf_grid.block_bytes(self.gguf_type)
        want = (out, inp // per * size)
        if self.data.dtype != torch.uint8 or tuple(self.data.shape) != want:
            raise ValueError(
                f"data must be uint8 {list(want)} for a {self.gguf_type} [{out}, {inp}] weight, got "
                f"{self.data.dtype} {list(self.data.shape)}"
            )

    @property
    def out_features(self) -> int:
        return self.shape[0]

    @property
    def in_features(self) -> int:
        return self.shape[1]

    def dequantize(self) -> Tensor:
        """float32 ``[out, in]``, bit for bit what ``gguf.quants.dequantize`` returns for ``data``."""
        out, inp = self.shape
        codes, d, minimum = gguf_grid.unpack_rows(self.gguf_type, self.data, inp)
        values = gguf_grid.decode(codes.reshape(out, inp // gguf_grid.BLOCK, -1), self.gguf_type, d, minimum)
        return values.reshape(out, inp)
