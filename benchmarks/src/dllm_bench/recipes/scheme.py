"""The bit setting of a recipe: the weight format (``dllm_kernels.QuantSpec`` fields), activation width.

A setting is written like the papers write it: ``W4A16`` (4-bit weights, float activations), ``W8A8``,
``W4A4``, optionally with a group size, ``W4A16g128``, or ``ch`` for one scale per output channel,
``W8A8ch`` (SmoothQuant's and llm-compressor's W8A8 weights). Quantized activations include the
attention's Q, K (after RoPE) and V at the same width unless a ``KV<bits>`` part says otherwise:
``W4A4KV16`` keeps them in floating point, ``W4A4KV8`` quantizes them to 8 bits (which of Q, K, V a
method quantizes is its recipe's ``attn_quant`` step). `parse_scheme` reads such a label and
`Scheme.with_label` applies it to a recipe's scheme, keeping the other weight fields (symmetry, group size
unless given).
"""

from __future__ import annotations

import re
from typing import Literal

from dllm_kernels import GGUFSpec, QuantSpec
from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["ACTIVATION_BITS", "SCHEME_LABELS", "Scheme", "SchemeLabel", "WeightScheme", "parse_scheme"]

SCHEME_LABELS = ("W4A16", "W3A16", "W2A16", "W8A8", "W4A8", "W4A4")
"""The settings the benchmarks compare (docs/references.md#bit-settings)."""

ACTIVATION_BITS = (4, 8, 16)
"""Activation widths of a scheme; 16 means activations stay in floating point."""

_LABEL = re.compile(
    r"^W(?P<w>[2348])A(?P<a>4|8|16)(?:KV(?P<kv>4|8|16))?(?:[-_]?(?:g(?P<g>[0-9]+)|(?P<ch>ch)))?$",
    re.IGNORECASE,
)


class SchemeLabel(BaseModel):
    """A parsed label: weight bits, activation bits, the attention width when the label gives one
    (``KV<bits>``), and an optional group size or ``per_channel`` (``ch``)."""

    model_config = ConfigDict(frozen=True)

    weight_bits: int
    activation_bits: int
    attention_bits: int | None = None
    group_size: int | None = None
    per_channel: bool = False


def parse_scheme(label: str) -> SchemeLabel:
    """``"W4A16"`` / ``"W8A8"`` / ``"W4A4KV16"`` / ``"W4A16g64"`` / ``"W8A8ch"`` -> `SchemeLabel`.

    Raises:
        ValueError: the label does not have that form (names the accepted ones).
    """
    match = _LABEL.match(label.strip()) if isinstance(label, str) else None
    if match is None:
        raise ValueError(
            f"bad scheme {label!r}: write W<weight bits>A<activation bits>[KV<attention bits>]"
            f"[g<group size> | ch] with weight bits in 2, 3, 4, 8 and activation/attention bits in 4, 8, 16, "
            "e.g. "
            f"{', '.join(SCHEME_LABELS)}, W4A4KV16, W4A16g64 or W8A8ch (per-channel weights)"
        )
    group, kv = match.group("g"), match.group("kv")
    activation_bits = int(match.group("a"))
    attention_bits = None if kv is None else int(kv)
    if attention_bits is not None and attention_bits < 16 and activation_bits == 16:
        raise ValueError(
            f"bad scheme {label!r}: the attention activations (KV{attention_bits}) can only be quantized "
            "when the linear inputs are (A4 or A8)"
        )
    return SchemeLabel(
        weight_bits=int(match.group("w")),
        activation_bits=activation_bits,
        attention_bits=attention_bits,
        group_size=None if group is None else int(group),
        per_channel=match.group("ch") is not None,
    )


class WeightScheme(BaseModel):
    """The weight format, with the fields of ``dllm_kernels.QuantSpec`` (integer grids only).

    ``group_size`` defaults to 128 for ``granularity: group`` and must be absent otherwise. ``gguf``
    (``Q8_0``, ``Q4_0``, ``Q4_K``) puts the weights on llama.cpp's grid of that type (``GGUFSpec``: blocks
    of 32, its own scale rules) instead of the fields above; ``dllmq quantize --format gguf`` sets it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bits: int
    symmetric: bool = True
    granularity: Literal["group", "channel", "tensor"] = "group"
    group_size: int | None = None
    gguf: Literal["Q8_0", "Q4_0", "Q4_K"] | None = None

    @model_validator(mode="after")
    def _valid_spec(self) -> WeightScheme:
        if self.granularity == "group" and self.group_size is None:
            object.__setattr__(self, "group_size", 128)
        self.spec()
        return self

    def spec(self) -> QuantSpec:
        """The ``QuantSpec`` every weight quantizer of the recipe uses (raises ``ValueError`` if invalid)."""
        if self.gguf is not None:
            return GGUFSpec.of(self.gguf)
        return QuantSpec(
            bits=self.bits,
            symmetric=self.symmetric,
            granularity=self.granularity,
            group_size=self.group_size,
        )


class Scheme(BaseModel):
    """Weights, the activation width (4 or 8: dynamic per-token integers; 16: float activations) and the
    width of the attention activations Q, K, V (``attention``; None: the activation width)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: WeightScheme
    activations: Literal[4, 8, 16] = 16
    attention: Literal[4, 8, 16] | None = None

    @model_validator(mode="after")
    def _attention_needs_activations(self) -> Scheme:
        if self.attention is not None and self.attention < 16 and self.activations == 16:
            raise ValueError(
                f"scheme.attention {self.attention} needs quantized activations (activations 4 or 8); "
                "drop it or set activations"
            )
        return self

    @property
    def label(self) -> str:
        """``W{bits}A{bits}``, ``KV{bits}`` when the attention width differs from the activations', and
        ``g{size}`` for group-wise weights, e.g. ``W4A16g128``, ``W4A4KV16``."""
        w = self.weights
        group = f"g{w.group_size}" if w.granularity == "group" else ""
        kv = "" if self.attention in (None, self.activations) else f"KV{self.attention}"
        return f"W{w.bits}A{self.activations}{kv}{group}"

    @property
    def quantizes_activations(self) -> bool:
        """True when activations are quantized (4 or 8 bits)."""
        return self.activations < max(ACTIVATION_BITS)

    @property
    def activation_bits(self) -> int | None:
        """The activation width when activations are quantized, None when they stay in floating point."""
        return self.activations if self.quantizes_activations else None

    @property
    def attention_bits(self) -> int | None:
        """The width of Q, K and V when they are quantized, None when they stay in floating point."""
        bits = self.activations if self.attention is None else self.attention
        return bits if bits < max(ACTIVATION_BITS) else None

    def with_label(self, label: str | SchemeLabel) -> Scheme:
        """This scheme at another bit setting (``"W3A16"``, ``"W8A8"``, ``"W4A4KV16"``, ``"W4A16g64"``,
        ``"W8A8ch"``, ...); the attention width follows the activations unless the label gives ``KV<bits>``;
        the weight granularity stays the recipe's unless the label gives a group size or ``ch``."""
        parsed = parse_scheme(label) if isinstance(label, str) else label
        weights = self.weights.model_dump()
        weights["bits"] = parsed.weight_bits
        if parsed.group_size is not None:
            weights["granularity"], weights["group_size"] = "group", parsed.group_size
        elif parsed.per_channel:
            weights["granularity"], weights["group_size"] = "channel", None
        return Scheme(
            weights=WeightScheme(**weights),
            activations=parsed.activation_bits,
            attention=parsed.attention_bits,
        )
