"""The bit setting of a recipe: the weight format (``dllm_kernels.QuantSpec`` fields), activation width.

A setting is written like the papers write it: ``W4A16`` (4-bit weights, float activations), ``W8A8``,
``W4A4``, optionally with a group size, ``W4A16g128``. `parse_scheme` reads such a label and
`Scheme.with_label` applies it to a recipe's scheme, keeping the other weight fields (symmetry, group
size unless given).
"""

from __future__ import annotations

import re
from typing import Literal

from dllm_kernels import QuantSpec
from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["ACTIVATION_BITS", "SCHEME_LABELS", "Scheme", "SchemeLabel", "WeightScheme", "parse_scheme"]

SCHEME_LABELS = ("W4A16", "W3A16", "W2A16", "W8A8", "W4A8", "W4A4")
"""The settings the benchmarks compare (docs/references.md#bit-settings)."""

ACTIVATION_BITS = (4, 8, 16)
"""Activation widths of a scheme; 16 means activations stay in floating point."""

_LABEL = re.compile(r"^W(?P<w>[2348])A(?P<a>4|8|16)(?:[-_]?g(?P<g>[0-9]+))?$", re.IGNORECASE)


class SchemeLabel(BaseModel):
    """A parsed label: weight bits, activation bits and an optional group size."""

    model_config = ConfigDict(frozen=True)

    weight_bits: int
    activation_bits: int
    group_size: int | None = None


def parse_scheme(label: str) -> SchemeLabel:
    """``"W4A16"`` / ``"W8A8"`` / ``"W4A16g64"`` -> `SchemeLabel`.

    Raises:
        ValueError: the label does not have that form (names the accepted ones).
    """
    match = _LABEL.match(label.strip()) if isinstance(label, str) else None
    if match is None:
        raise ValueError(
            f"bad scheme {label!r}: write W<weight bits>A<activation bits>[g<group size>] with weight bits "
            f"in 2, 3, 4, 8 and activation bits in 4, 8, 16, e.g. {', '.join(SCHEME_LABELS)} or W4A16g64"
        )
    group = match.group("g")
    return SchemeLabel(
        weight_bits=int(match.group("w")),
        activation_bits=int(match.group("a")),
        group_size=None if group is None else int(group),
    )


class WeightScheme(BaseModel):
    """The weight format, with the fields of ``dllm_kernels.QuantSpec`` (integer grids only).

    ``group_size`` defaults to 128 for ``granularity: group`` and must be absent otherwise.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bits: int
    symmetric: bool = True
    granularity: Literal["group", "channel", "tensor"] = "group"
    group_size: int | None = None

    @model_validator(mode="after")
    def _valid_spec(self) -> WeightScheme:
        if self.granularity == "group" and self.group_size is None:
            object.__setattr__(self, "group_size", 128)
        self.spec()
        return self

    def spec(self) -> QuantSpec:
        """The ``QuantSpec`` every weight quantizer of the recipe uses (raises ``ValueError`` if invalid)."""
        return QuantSpec(
            bits=self.bits,
            symmetric=self.symmetric,
            granularity=self.granularity,
            group_size=self.group_size,
        )


class Scheme(BaseModel):
    """Weights plus the activation width (4 or 8: dynamic per-token integers; 16: float activations)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: WeightScheme
    activations: Literal[4, 8, 16] = 16

    @property
    def label(self) -> str:
        """``W{bits}A{bits}`` plus ``g{size}`` for group-wise weights, e.g. ``W4A16g128``."""
        w = self.weights
        group = f"g{w.group_size}" if w.granularity == "group" else ""
        return f"W{w.bits}A{self.activations}{group}"

    @property
    def quantizes_activations(self) -> bool:
        """True when activations are quantized (4 or 8 bits)."""
        return self.activations < max(ACTIVATION_BITS)

    @property
    def activation_bits(self) -> int | None:
        """The activation width when activations are quantized, None when they stay in floating point."""
        return self.activations if self.quantizes_activations else None

    def with_label(self, label: str | SchemeLabel) -> Scheme:
        """This scheme at another bit setting (``"W3A16"``, ``"W8A8"``, ``"W4A16g64"``, ...)."""
        parsed = parse_scheme(label) if isinstance(label, str) else label
        weights = self.weights.model_dump()
        weights["bits"] = parsed.weight_bits
        if parsed.group_size is not None:
            weights["granularity"], weights["group_size"] = "group", parsed.group_size
        return Scheme(weights=WeightScheme(**weights), activations=parsed.activation_bits)
