"""Activation quantizers: dynamic per-token (through dllm_kernels) and static per-tensor (calibrated).

Conventions are dllm_kernels' (``quantize_per_token``): codes are signed integers in
``[-2^(b-1), 2^(b-1)-1]`` also when asymmetric, and a value is ``(code - zero) * scale``.

* symmetric: ``scale = max(|lo|, |hi|) / ((2^b - 1) / 2)``, no zero point;
* asymmetric: ``scale = (hi - lo) / (2^b - 1)``, ``zero = rint(clamp(-2^(b-1) - lo / scale))``;

with ``lo = min(min(x), 0) * clip``, ``hi = max(max(x), 0) * clip`` over the cell (a token row for
dynamic, the whole tensor seen during calibration for static). Rounding is half-to-even.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import dllm_kernels
import torch
from dllm_calib import MethodConfig
from torch import Tensor

__all__ = [
    "ActQuantConfig",
    "StaticActParams",
    "fake_quantize_activation",
    "minmax_scale_zero",
    "quantize_activation",
    "quantize_with_params",
]

ACT_BITS = (4, 8)
_EPS32 = torch.finfo(torch.float32).eps


@dataclass(frozen=True)
class ActQuantConfig(MethodConfig):
    """How a Linear's input is quantized.

    Attributes:
        bits: 4 or 8.
        symmetric: signed codes without a zero point (True) or with one (False).
        granularity: ``"token"`` (dynamic, one scale per token, computed at run time) or ``"tensor"``
            (static, one scale for the layer from calibration statistics).
        clip_ratio: range shrink factor in (0, 1] applied to the min/max before the scale formula.
    """

    bits: int = 8
    symmetric: bool = True
    granularity: Literal["token", "tensor"] = "token"
    clip_ratio: float = 1.0

    def validate(self) -> None:
        if isinstance(self.bits, bool) or self.bits not in ACT_BITS:
            raise ValueError(f"ActQuantConfig.bits must be one of {ACT_BITS}, got {self.bits!r}")
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"ActQuantConfig.symmetric must be a bool, got {self.symmetric!r}")
        if self.granularity not in ("token", "tensor"):
            raise ValueError(
                "ActQuantConfig.granularity must be 'token' (dynamic) or 'tensor' (static), "
                f"got {self.granularity!r}"
            )
        if not (isinstance(self.clip_ratio, int | float) and 0.0 < self.clip_ratio <= 1.0):
            raise ValueError(f"ActQuantConfig.clip_ratio must be in (0, 1], got {self.clip_ratio!r}")

    @property
    def dynamic(self) -> bool:
        """True for per-token scales computed at run time."""
        return self.granularity == "token"

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1


def minmax_scale_zero(lo: Tensor, hi: Tensor, bits: int, symmetric: bool) -> tuple[Tensor, Tensor | None]:
    """float32 scale and signed float32 zero (None if symmetric) from per-cell ``lo``/``hi`` (any shape).

    Same formulas as dllm_kernels (module docstring); a zero-width cell gets scale eps32 and zero 0.
    """
    lo = torch.clamp(lo.to(torch.float32), max=0.0)
    hi = torch.clamp(hi.to(torch.float32), min=0.0)
    qmin, qmax = float(-(1 << (bits - 1))), float((1 << (bits - 1)) - 1)
    q_range = qmax - qmin
    if symmetric:
        scale = torch.maximum(lo.abs(), hi.abs()) / (q_range / 2)
        zero = None
    else:
        scale = (hi - lo) / q_range
        safe = torch.where(scale == 0, torch.ones_like(scale), scale)
        zero = torch.where(
            scale == 0, torch.zeros_like(scale), torch.round((qmin - lo / safe).clamp(qmin, qmax))
        )
    scale = torch.where(scale == 0, torch.full_like(scale, _EPS32), scale)
    return scale, zero


def quantize_with_params(x: Tensor, scale: Tensor, zero: Tensor | None, bits: int) -> Tensor:
    """Signed integer codes (int8) of ``x`` for broadcastable ``scale``/``zero`` (computed in float32)."""
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    v = x.to(torch.float32) / scale
    if zero is not None:
        v = v + zero
    return torch.round(v).clamp(qmin, qmax).to(torch.int8)


def _dequant(codes: Tensor, scale: Tensor, zero: Tensor | None) -> Tensor:
    c = codes.to(torch.float32)
    if zero is not None:
        c = c - zero
    return c * scale


@dataclass(frozen=True)
class StaticActParams:
    """Calibrated per-tensor parameters of a static activation quantizer.

    Attributes:
        scale: step size (> 0), in activation units.
        zero: signed integer zero point (None when symmetric).
    """

    scale: float
    zero: int | None = None

    def __post_init__(self) -> None:
        if not (
            isinstance(self.scale, int | float)
            and self.scale > 0
            and torch.isfinite(torch.tensor(self.scale))
        ):
            raise ValueError(f"StaticActParams.scale must be a finite positive number, got {self.scale!r}")

    @classmethod
    def from_absmax(cls, absmax: Tensor | float, config: ActQuantConfig) -> StaticActParams:
        """Symmetric parameters from the calibration absmax (a per-channel ``[C]`` vector or a scalar)."""
        if not config.symmetric:
            raise ValueError(
                "static asymmetric activation quantization needs the calibration min and max, not only the "
                "absmax; use StaticActParams.from_minmax or a symmetric config"
            )
        amax = float(torch.as_tensor(absmax, dtype=torch.float64).max()) * config.clip_ratio
        scale, _ = minmax_scale_zero(torch.tensor(-amax), torch.tensor(amax), config.bits, True)
        return cls(float(scale))

    @classmethod
    def from_minmax(cls, lo: float, hi: float, config: ActQuantConfig) -> StaticActParams:
        """Parameters from the calibration min ``lo`` and max ``hi`` (the clip ratio is applied here)."""
        r = config.clip_ratio
        scale, zero = minmax_scale_zero(
            torch.tensor(lo * r), torch.tensor(hi * r), config.bits, config.symmetric
        )
        return cls(float(scale), None if zero is None else int(zero))


def quantize_activation(
    x: Tensor, config: ActQuantConfig, static: StaticActParams | None = None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``x [M, K]`` -> ``(codes int8 [M, K], scale float32 [M], zero float32 [M] or None)``.

    Dynamic configs call ``dllm_kernels.quantize_per_token``; static ones need ``static`` parameters.
    """
    if x.dim() != 2:
        raise ValueError(f"quantize_activation expects x [tokens, features], got shape {tuple(x.shape)}")
    if config.dynamic:
        codes, scale, zero = dllm_kernels.quantize_per_token(
            x, config.bits, config.symmetric, config.clip_ratio
        )
        return codes, scale.to(torch.float32), None if zero is None else zero.to(torch.float32)
    if static is None:
        raise ValueError("a static ('tensor') activation quantizer needs calibrated StaticActParams")
    if (static.zero is None) != config.symmetric:
        raise ValueError(
            f"StaticActParams zero={static.zero!r} does not match symmetric={config.symmetric}; "
            "recalibrate with the same config"
        )
    m = x.shape[0]
    scale = torch.full((m,), static.scale, dtype=torch.float32, device=x.device)
    zero = None if static.zero is None else torch.full((m,), float(static.zero), device=x.device)
    codes = quantize_with_params(x, scale[:, None], None if zero is None else zero[:, None], config.bits)
    return codes, scale, zero


def fake_quantize_activation(
    x: Tensor, config: ActQuantConfig, static: StaticActParams | None = None
) -> Tensor:
    """Quantize then dequantize ``x [..., K]`` along its last dim; returns the dtype of ``x``."""
    flat = x.reshape(-1, x.shape[-1])
    codes, scale, zero = quantize_activation(flat, config, static)
    out = _dequant(codes, scale[:, None], None if zero is None else zero[:, None])
    return out.to(x.dtype).reshape(x.shape)
