"""The step methods a recipe may name, their pipeline stage, and the library config each one builds.

Every step is ``{"method": name, **params}``. ``params`` are the fields of the owning package's config
object (``dllm_actquant`` for the activation transforms, ``dllm_weightquant`` for AWQ and the quantizers),
so a recipe never invents its own knobs: ``build_config`` turns the params into that object, which
validates them.

Stages run in this order (a recipe lists its steps in the same order):

0. ``global``: whole-model equivalence transforms that act across blocks (QuaRot, SmoothQuant, DuQuant),
   applied once before the block loop on float statistics;
1. ``block_transform``: AWQ, searched per block on the already-quantized prefix;
2. ``vquant``: DLLMQuant's IA-AQ search of the V quantizer, per block;
3. ``quantizer``: exactly one weight quantizer (RTN, GPTQ, CGQ, DAQ, ABMP), per block and stage;
4. ``activations``: dynamic per-token activation quantization of the block's linears.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dllm_actquant import (
    ActQuantConfig,
    DuQuantConfig,
    IAAQConfig,
    QuaRotConfig,
    SmoothQuantConfig,
    VQuantConfig,
)
from dllm_weightquant import METHODS as WEIGHT_METHODS

__all__ = [
    "ACTIVATION_BITS",
    "METHOD_STAGE",
    "QUANTIZERS",
    "STAGES",
    "build_config",
]

STAGES = ("global", "block_transform", "vquant", "quantizer", "activations")
"""Pipeline stages in execution order."""

QUANTIZERS = ("rtn", "gptq", "cgq", "daq", "abmp")
"""Weight quantizers (``dllm_weightquant.METHODS`` of kind "quantizer")."""

METHOD_STAGE: dict[str, str] = {
    "quarot": "global",
    "smoothquant": "global",
    "duquant": "global",
    "awq": "block_transform",
    "iaaq": "vquant",
    **dict.fromkeys(QUANTIZERS, "quantizer"),
    "act_quant": "activations",
}
"""Method name -> stage."""

ACTIVATION_BITS = (4, 8, 16)
"""Activation widths of a scheme; 16 means activations stay in floating point."""

_SEEDED = ("quarot", "duquant")
"""Methods whose config has a ``seed``; the recipe seed fills it when the step does not set one."""


def _dataclass_from_params(cls: type, params: dict[str, Any]) -> Any:
    """``cls(**params)`` for a plain frozen dataclass, lists turned into tuples, unknown keys named."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; {cls.__name__} has {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})


def _act_quant(params: dict[str, Any], act_bits: int) -> ActQuantConfig:
    allowed = {"symmetric", "clip_ratio"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"unknown parameters {unknown}; act_quant takes {sorted(allowed)} (its bits come from the "
            "scheme, e.g. W4A8, and it is always dynamic per token)"
        )
    return ActQuantConfig(bits=act_bits, granularity="token", **params)


def _iaaq(params: dict[str, Any], act_bits: int) -> IAAQConfig:
    params = dict(params)
    vquant = dict(params.pop("vquant", None) or {})
    vquant.setdefault("bits", act_bits)
    known = {f.name for f in dataclasses.fields(IAAQConfig)} - {"vquant"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; iaaq takes {sorted(known | {'vquant'})}")
    if "alphas" in params:
        params["alphas"] = tuple(params["alphas"])
    return IAAQConfig(vquant=_dataclass_from_params(VQuantConfig, vquant), **params)


def build_config(method: str, params: dict[str, Any], *, seed: int = 0, act_bits: int = 8) -> Any:
    """The library config object of ``method`` built from ``params`` (validated by its constructor).

    ``seed`` fills the ``seed`` field of seeded transforms when ``params`` has none; ``act_bits`` (4 or 8)
    is the width of ``act_quant`` and the default V width of ``iaaq``.

    Raises:
        ValueError: unknown method or parameters, or a value the config rejects.
    """
    if method not in METHOD_STAGE:
        raise ValueError(f"unknown step method {method!r}; known methods: {sorted(METHOD_STAGE)}")
    if not isinstance(params, dict):
        raise ValueError(f"step {method!r}: parameters must be a mapping, got {type(params).__name__}")
    if method in _SEEDED and "seed" not in params:
        params = {**params, "seed": seed}
    try:
        if method == "quarot":
            return _dataclass_from_params(QuaRotConfig, params)
        if method == "smoothquant":
            return _dataclass_from_params(SmoothQuantConfig, params)
        if method == "duquant":
            return _dataclass_from_params(DuQuantConfig, params)
        if method == "act_quant":
            return _act_quant(params, act_bits)
        if method == "iaaq":
            return _iaaq(params, act_bits)
        return WEIGHT_METHODS[method].config_cls.from_dict(params)
    except (TypeError, ValueError) as err:
        raise ValueError(f"step {method!r}: {err}") from err
