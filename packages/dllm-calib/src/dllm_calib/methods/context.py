"""What a method sees when it runs: `MethodContext`, and the log row it reports per module.

The pipeline that runs a recipe (``dllm_bench``'s layer-wise pipeline, or any other driver) implements
`MethodContext`. A context covers a *unit*: the whole model (global transforms) or one block. Methods
read calibration data only through `MethodContext.feeds`, which yields each block of the unit with a
`Feed` of the hidden states entering it: float states in the global stage, states through the already
quantized blocks in the per-block stages, with only that block on the accelerator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from dllm_kernels import QuantSpec
from dllm_sampler import DiffusionLM

from dllm_calib.feed import Feed

__all__ = ["LogRow", "MethodContext"]


@dataclass(frozen=True)
class LogRow:
    """One module's (or transform's) line of a quantization log; NaN marks a missing number.

    Attributes:
        block: the block index, -1 for whole-model transforms.
        module: the qualified module name, or the transformed group (``"*"`` for the whole model).
        method: the method (and what it did, e.g. ``"act_quant(a4)"``).
        loss: the method's own objective for the module (a quantizer's ``tr((W - Q) H (W - Q)^T)``, AWQ's
            output error, IA-AQ's attention-weighted V error).
        rel_weight_error: ``|W - Q|_F^2 / |W|_F^2`` of a quantized weight.
        seconds: wall time spent on the module.
    """

    block: int
    module: str
    method: str
    loss: float = math.nan
    rel_weight_error: float = math.nan
    seconds: float = 0.0


class MethodContext(Protocol):
    """The unit a method is applied to (see the module docstring)."""

    @property
    def dlm(self) -> DiffusionLM:
        """The model (its ``topology`` names every block linear)."""
        ...

    @property
    def blocks(self) -> Sequence[int]:
        """The block indices this application covers: every block (global stage) or one."""
        ...

    @property
    def weight_spec(self) -> QuantSpec:
        """The weight format of every quantized linear."""
        ...

    @property
    def ignored(self) -> frozenset[str]:
        """Topology names of the block linears the recipe leaves in floating point."""
        ...

    @property
    def true_sequential(self) -> bool:
        """Quantize a block's linears stage by stage (q/k/v, o, gate/up, down), each stage's statistics
        collected after the earlier stages were quantized."""
        ...

    def feeds(self) -> Iterator[tuple[int, Feed]]:
        """For each block of the unit in order: its index and a `Feed` of its inputs, the block on the
        accelerator while the caller holds it. Raises ``ValueError`` when the run has no calibration set."""
        ...

    def defer(self, action: Callable[[], None]) -> None:
        """Run ``action`` once every step of the current block is done (before its outputs propagate)."""
        ...
