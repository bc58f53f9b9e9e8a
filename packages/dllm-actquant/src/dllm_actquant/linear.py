"""`ActQuantLinear`: a layer whose input activations are quantized, fake or through integer GEMMs.

Two modes:

* ``"fake"``: ``inner(dequant(quant(x)))`` for any ``inner`` module (an ``nn.Linear`` whose weight may
  already be fake-quantized, or another package's quantized layer). Accuracy studies use this.
* ``"kernel"``: real low-bit math. The wrapped ``nn.Linear``'s weight is quantized once, at construction,
  to symmetric per-output-channel ``weight_bits`` codes (round to nearest), the input is quantized per token
  (or with static parameters) and ``dllm_kernels.int8_gemm`` / ``w4a8_gemm`` / ``w4a4_gemm`` compute
  ``y = x W^T`` with int32 accumulation. Asymmetric activations are handled exactly with the
  zero-point correction ``y -= scale_x * zero_x * (scale_w * rowsum(W_codes))``.
  An already quantized inner layer (a kernel-mode ``dllm_weightquant.QuantLinear`` with symmetric integer
  codes, per channel or in groups: `packed_integer_inner`) keeps its packed weight: on the CPU its
  ``cpu_weight().int_matmul`` multiplies the activation codes by the weight codes group by group with
  exact integer accumulation (``torch._int_mm``); elsewhere the layer computes the fake-mode numbers.

Inside an `OnlineRotation` with a Hadamard rotation, the kernel mode fuses rotation and quantization
(``dllm_kernels.hadamard_quantize_per_token``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import dllm_kernels
import torch
from dllm_kernels import QuantSpec
from dllm_sampler.models.layers import add_bias
from torch import Tensor, nn

from dllm_actquant.act_quant import (
    ActQuantConfig,
    StaticActParams,
    fake_quantize_activation,
    quantize_activation,
)
from dllm_actquant.guards import mark_quantized
from dllm_actquant.rotation import HadamardRotation, InputRotation, RotationAware

__all__ = ["ActQuantLinear", "finish_integer_gemm", "packed_integer_inner"]

WEIGHT_BITS = (4, 8)


def packed_integer_inner(inner: nn.Module) -> bool:
    """True if ``inner`` is a kernel-mode quantized layer whose weight codes an integer GEMM can use as they
    are: it offers ``cpu_weight()`` (``dllm_weightquant.QuantLinear``), with symmetric codes of 8 or fewer
    bits and no act-order column permutation."""
    if getattr(inner, "mode", None) != "kernel" or not callable(getattr(inner, "cpu_weight", None)):
        return False
    spec = getattr(inner, "spec", None)
    return (
        spec is not None
        and not spec.is_fp8
        and spec.symmetric
        and spec.granularity in ("channel", "group")
        and getattr(inner, "kernel_perm", None) is None
    )


def finish_integer_gemm(
    y: Tensor,
    scale: Tensor,
    zero: Tensor | None,
    column_term: Callable[[], Tensor],
    bias: Tensor | None,
    dtype: torch.dtype,
) -> Tensor:
    """An integer GEMM's float32 ``y [M, N]`` with the zero-point correction of asymmetric activations
    (``y -= (scale * zero)[m] * column_term()[n]``, float ``zero [M]``; ``column_term`` is asked for only
    then) and the bias, in ``dtype``: what `ActQuantLinear` and its shared-input runner apply."""
    if zero is not None:
        y = y - (scale * zero)[:, None] * column_term()[None, :]
    return add_bias(y, bias, dtype)


class ActQuantLinear(RotationAware):
    """Quantizes the input of ``inner`` (see module docstring).

    Args:
        inner: the wrapped layer; for ``mode="kernel"`` an ``nn.Linear`` or a `packed_integer_inner` layer,
            anything for ``"fake"``.
        config: the activation quantizer.
        static: calibrated parameters, required for a static (``granularity="tensor"``) config.
        mode: ``"fake"`` or ``"kernel"``.
        weight_bits: 4 or 8, the weight code width of the kernel mode for a float ``inner`` (None in fake mode
            and for a packed inner, whose codes are used as they are).
    """

    def __init__(
        self,
        inner: nn.Module,
        config: ActQuantConfig,
        *,
        static: StaticActParams | None = None,
        mode: Literal["fake", "kernel"] = "fake",
        weight_bits: int | None = None,
    ) -> None:
        super().__init__()
        if not config.dynamic and static is None:
            raise ValueError("a static activation config needs calibrated StaticActParams (static=...)")
        if mode not in ("fake", "kernel"):
            raise ValueError(f"mode must be 'fake' or 'kernel', got {mode!r}")
        self.inner = inner
        self.config = config
        self.static = static
        self.mode = mode
        self.weight_bits = weight_bits
        self.packed_inner = False
        if mode == "fake":
            if weight_bits is not None:
                raise ValueError(
                    "weight_bits is for mode='kernel'; in fake mode quantize the inner layer's weight "
                    "yourself "
                    "(e.g. with dllm_weightquant) and leave weight_bits=None"
                )
            mark_quantized(self, "activations")
            return
        self.packed_inner = packed_integer_inner(inner)
        if self.packed_inner:
            if weight_bits is not None:
                raise ValueError(
                    "weight_bits is for a float inner layer; a quantized inner keeps its own codes"
                )
            mark_quantized(self, "weights+activations")
            return
        if not isinstance(inner, nn.Linear) or not inner.weight.is_floating_point():
            raise ValueError(
                "mode='kernel' quantizes the weight itself and needs a float nn.Linear, got "
                f"{type(inner).__name__}; "
                "use mode='fake' to wrap other modules"
            )
        if weight_bits not in WEIGHT_BITS:
            raise ValueError(f"mode='kernel' needs weight_bits in {WEIGHT_BITS}, got {weight_bits!r}")
        # spec-driven quantize/pack, once, on the weight's device (the dispatcher picks the backend)
        spec = QuantSpec(weight_bits, True, "channel")
        codes, scale, _ = dllm_kernels.quantize(inner.weight.detach(), spec)
        stored = codes if weight_bits == 8 else dllm_kernels.pack(codes, 4)
        self.register_buffer("w_scale", scale.reshape(-1))
        self.register_buffer("w_codes", stored)
        # scale_w[n] * sum_k codes[n, k]: the zero-point correction term of asymmetric activations
        colsum = codes.to(torch.float32).sum(1)
        self.register_buffer("w_colterm", self.w_scale * colsum)
        mark_quantized(self, "weights+activations")

    @property
    def in_features(self) -> int | None:
        return getattr(self.inner, "in_features", None)

    @property
    def out_features(self) -> int | None:
        return getattr(self.inner, "out_features", None)

    def forward(self, x: Tensor, rotation: InputRotation | None = None) -> Tensor:
        """``x [..., K]`` -> ``[..., N]`` in the dtype of ``x``; ``rotation`` is applied to ``x`` first."""
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])
        if self.mode == "fake":
            if rotation is not None:
                flat = rotation(flat)
            y = self.inner(fake_quantize_activation(flat, self.config, self.static))
            return y.reshape(*lead, y.shape[-1])
        cfg = self.config
        if self.packed_inner and flat.device.type != "cpu":
            if rotation is not None:
                flat = rotation(flat)
            y = self.inner(fake_quantize_activation(flat, cfg, self.static))
            return y.reshape(*lead, y.shape[-1])
        if isinstance(rotation, HadamardRotation) and cfg.dynamic:
            codes, scale, zero = dllm_kernels.hadamard_quantize_per_token(
                flat, cfg.bits, cfg.symmetric, cfg.clip_ratio
            )
            scale, zero = scale.float(), None if zero is None else zero.float()
        else:
            if rotation is not None:
                flat = rotation(flat)
            if self.packed_inner and cfg.dynamic:  # quantized in the launch that unpacks the weight codes
                stack = self.inner.cpu_weight().stack
                y, scale, zero = stack.quantized_int_matmul(flat, cfg.bits, cfg.symmetric, cfg.clip_ratio)
                return self._epilogue(y, scale, None if zero is None else zero.float(), x.dtype, lead)
            codes, scale, zero = quantize_activation(flat, cfg, self.static)
        return self._epilogue(self._gemm(codes, scale), scale, zero, x.dtype, lead)

    def _epilogue(
        self, y: Tensor, scale: Tensor, zero: Tensor | None, dtype: torch.dtype, lead: torch.Size
    ) -> Tensor:
        """`finish_integer_gemm` of this layer, reshaped to ``[*lead, N]``."""
        y = finish_integer_gemm(y, scale, zero, self._column_term, self.inner.bias, dtype)
        return y.reshape(*lead, y.shape[-1])

    def _column_term(self) -> Tensor:
        return self.inner.cpu_weight().column_term if self.packed_inner else self.w_colterm

    def _gemm(self, codes: Tensor, scale: Tensor) -> Tensor:
        if self.packed_inner:
            return self.inner.cpu_weight().int_matmul(codes, scale)
        if self.weight_bits == 8:
            return dllm_kernels.int8_gemm(codes, scale, self.w_codes, self.w_scale)
        if self.config.bits == 4:
            return dllm_kernels.w4a4_gemm(codes, scale, self.w_codes, self.w_scale)
        return dllm_kernels.w4a8_gemm(codes, scale, self.w_codes, self.w_scale)

    def extra_repr(self) -> str:
        c = self.config
        w = f", weight_bits={self.weight_bits}" if self.weight_bits else ""
        return (
            f"mode={self.mode!r}, bits={c.bits}, symmetric={c.symmetric}, granularity={c.granularity!r}, "
            f"clip_ratio={c.clip_ratio}{w}"
        )
