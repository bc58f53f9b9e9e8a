"""Quantization markers and the checks that keep transforms from running on quantized or wrapped modules.

Equivalence transforms (SmoothQuant, QuaRot, DuQuant) rewrite float weights; once a layer's weights are
quantized, or once a layer is wrapped for online rotation or activation quantization, rewriting its weights
would silently change the quantized model. Every module that holds quantized state is *marked* with the
attribute ``dllmq_quantized`` (a short string saying what is quantized: ``"weights"``, ``"activations"``);
other packages can set the same attribute (no import needed) and transforms refuse marked modules.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

__all__ = ["QUANTIZED_ATTR", "TransformError", "is_quantized", "mark_quantized", "require_float_linears"]

QUANTIZED_ATTR = "dllmq_quantized"
"""Attribute name of the quantization marker (a non-empty string when the module holds quantized state)."""


class TransformError(ValueError):
    """An equivalence transform was asked to do something it cannot do correctly (names the fix)."""


def mark_quantized(module: nn.Module, what: str = "weights") -> None:
    """Mark ``module`` as holding quantized state (``what``: e.g. "weights" or "activations")."""
    if not what:
        raise ValueError("mark_quantized needs a non-empty description, e.g. 'weights'")
    setattr(module, QUANTIZED_ATTR, what)


def is_quantized(module: nn.Module) -> bool:
    """True if ``module`` carries the quantization marker."""
    return bool(getattr(module, QUANTIZED_ATTR, ""))


def require_float_linears(named: Iterable[tuple[str, nn.Module]], transform: str) -> None:
    """Raise `TransformError` unless every module is an unmarked ``nn.Linear`` with floating-point weights.

    ``named`` yields (qualified name, module); ``transform`` names the caller for the message.
    """
    for name, module in named:
        if is_quantized(module):
            raise TransformError(
                f"{transform}: {name!r} is already quantized ({getattr(module, QUANTIZED_ATTR)}); "
                "equivalence "
                "transforms must run on the float model, before any weight or activation quantization"
            )
        if type(module) is not nn.Linear:
            raise TransformError(
                f"{transform}: {name!r} is a {type(module).__name__}, not a plain nn.Linear; it was already "
                "wrapped (online rotation or activation quantizer) or replaced by a quantized layer. Apply "
                "every equivalence transform first, then quantize."
            )
        if not module.weight.is_floating_point():
            raise TransformError(
                f"{transform}: {name!r} has a {module.weight.dtype} weight; expected a float one"
            )
