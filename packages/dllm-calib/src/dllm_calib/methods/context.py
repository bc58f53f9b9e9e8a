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

__all__ = ["STARVED_POLICIES", "ExpertPolicy", "LogRow", "MethodContext"]


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
        tokens: calibration tokens (nonzero weight) behind the module's Hessian, -1 without one; for a
            routed expert's linear, the tokens routed to that expert (its coverage).
    """

    block: int
    module: str
    method: str
    loss: float = math.nan
    rel_weight_error: float = math.nan
    seconds: float = 0.0
    tokens: int = -1


STARVED_POLICIES = ("shared", "rtn", "targeted")
"""What a weight quantizer does for a routed expert whose Hessian saw fewer than ``min_tokens`` tokens."""


@dataclass(frozen=True)
class ExpertPolicy:
    """How Hessian quantizers treat routed experts that calibration starves.

    Attributes:
        min_tokens: an expert whose own Hessian saw fewer tokens is starved; None means the linear's input
            width (fewer tokens than channels leave its Hessian rank-deficient).
        starved: ``"shared"`` (default): quantize it with the pooled Hessian of the layer's routed experts
            for the same linear (every routed token's input, the expert's own tokens included), so the
            quantizer still sees the layer's activation correlations; ``"rtn"``: round to nearest;
            ``"targeted"``: add the tokens the router sends it from ``reserve`` extra calibration states,
            which run through the model with the others but count only in starved experts' Hessians, and
            fall back to ``"shared"`` if it is still short.
        reserve: the number of extra states ``"targeted"`` draws (> 0 there, 0 for the other policies).
    """

    min_tokens: int | None = None
    starved: str = "shared"
    reserve: int = 0

    def __post_init__(self) -> None:
        if self.starved not in STARVED_POLICIES:
            raise ValueError(
                f"moe.starved {self.starved!r} is unknown; choose one of {list(STARVED_POLICIES)}"
            )
        if self.min_tokens is not None and self.min_tokens < 0:
            raise ValueError(f"moe.min_tokens must be >= 0 or null (the input width), got {self.min_tokens}")
        if self.starved == "targeted" and self.reserve < 1:
            raise ValueError(
                "moe.starved 'targeted' draws extra calibration states for starved experts; set moe.reserve "
                f"to their number (e.g. 128), got {self.reserve}"
            )
        if self.starved != "targeted" and self.reserve != 0:
            raise ValueError(
                f"moe.reserve only applies to starved: targeted (this policy is {self.starved!r}); drop it"
            )

    def threshold(self, in_features: int) -> int:
        """The token count below which a linear of input width ``in_features`` is starved."""
        return in_features if self.min_tokens is None else self.min_tokens


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

    @property
    def expert_policy(self) -> ExpertPolicy:
        """How quantizers treat starved routed experts (mixture-of-experts models only)."""
        ...

    @property
    def reserve_from(self) -> int | None:
        """Index of the first reserve state of the calibration set (``ExpertPolicy.reserve`` states at its
        end, drawn for ``starved: targeted``): only starved experts' Hessians read states from there on.
        None when the set has no reserve."""
        ...

    def feeds(self) -> Iterator[tuple[int, Feed]]:
        """For each block of the unit in order: its index and a `Feed` of its inputs, the block on the
        accelerator while the caller holds it. Raises ``ValueError`` when the run has no calibration set."""
        ...

    def defer(self, action: Callable[[], None]) -> None:
        """Run ``action`` once every step of the current block is done (before its outputs propagate)."""
        ...
