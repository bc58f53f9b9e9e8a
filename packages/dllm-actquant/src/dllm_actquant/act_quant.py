"""Activation quantizers: dynamic per-token (``dllm_kernels.quantize_per_token``) and static per-tensor
(calibrated, on ``dllm_kernels.torch_grid``).

Both are the integer grid of dllm_kernels in its signed storage: codes are signed integers in
``[-2^(b-1), 2^(b-1)-1]`` also when asymmetric, and a value is ``(code - zero) * scale``; the range of a cell
(a token row for dynamic, the whole tensor seen during calibration for static) is shrunk by the clip ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import dllm_kernels
import torch
from dllm_calib import MethodConfig
from dllm_kernels import torch_grid
from torch import Tensor

__all__ = [
    "ActQuantConfig",
    "StaticActParams",
    "fake_quantize_activation",
    "quantize_activation",
]

ACT_BITS = (4, 8)


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
        amax = torch.as_tensor(absmax, dtype=torch.float64).max().float()
        scale, _ = torch_grid.scale_zero(-amax, amax, config.bits, True, config.clip_ratio)
        return cls(float(scale))

    @classmethod
    def from_minmax(cls, lo: float, hi: float, config: ActQuantConfig) -> StaticActParams:
        """Parameters from the calibration min ``lo`` and max ``hi`` (the clip ratio is applied here)."""
        scale, zero = torch_grid.scale_zero(
            torch.tensor(lo), torch.tensor(hi), config.bits, config.symmetric, config.clip_ratio
        )
        return cls(float(scale), None if zero is None else int(zero))


def _quantize(
    x: Tensor, config: ActQuantConfig, static: StaticActParams | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``x [M, K]`` -> ``(codes int8 [M, K], scale float32 [M], signed zero int32 [M] or None)``."""
    if x.dim() != 2:
        raise ValueError(f"quantize_activation expects x [tokens, features], got shape {tuple(x.shape)}")
    if config.dynamic:
        return dllm_kernels.quantize_per_token(x, config.bits, config.symmetric, config.clip_ratio)
    if static is None:
        raise ValueError("a static ('tensor') activation quantizer needs calibrated StaticActParams")
    if (static.zero is None) != config.symmetric:
        raise ValueError(
            f"StaticActParams zero={static.zero!r} does not match symmetric={config.symmetric}; "
            "recalibrate with the same config"
        )
    m = x.shape[0]
    scale = torch.full((m,), static.scale, dtype=torch.float32, device=x.device)
    zero = None if static.zero is None else torch.full((m,), static.zero, dtype=torch.int32, device=x.device)
    codes = torch_grid.encode(x, scale[:, None], None if zero is None else zero[:, None], config.bits)
    return codes, scale, zero


def quantize_activation(
    x: Tensor, config: ActQuantConfig, static: StaticActParams | None = None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``x [M, K]`` -> ``(codes int8 [M, K], scale float32 [M], zero float32 [M] or None)``.

    Dynamic configs call ``dllm_kernels.quantize_per_token``; static ones need ``static`` parameters.
    """
    codes, scale, zero = _quantize(x, config, static)
    return codes, scale, None if zero is None else zero.to(torch.float32)


def fake_quantize_activation(
    x: Tensor, config: ActQuantConfig, static: StaticActParams | None = None
) -> Tensor:
    """Quantize then dequantize ``x [..., K]`` along its last dim; returns the dtype of ``x``. Dynamic configs
    call ``dllm_kernels.fake_quantize_per_token`` (one fused pass on the CPU)."""
    flat = x.reshape(-1, x.shape[-1])
    if config.dynamic:
        out = dllm_kernels.fake_quantize_per_token(flat, config.bits, config.symmetric, config.clip_ratio)
    else:
        codes, scale, zero = _quantize(flat, config, static)
        out = torch_grid.decode(codes, scale[:, None], None if zero is None else zero[:, None])
    return out.to(x.dtype).reshape(x.shape)
