"""On-disk tensors of one quantized Linear (names relative to the module; see ``FORMAT.md``).

Uniform weights use the compressed-tensors ``pack-quantized`` layout: ``weight_packed`` int32
``[out, ceil(in*b/32)]``, ``weight_scale`` float32 ``[out, in/group]`` (``[out, 1]`` channel, ``[1]`` tensor),
``weight_shape`` int64 ``[2]``, ``weight_zero_point`` int32 ``[ceil(out*b/32), in/group]`` (unsigned zero
points packed along dim 0, asymmetric only) and ``weight_g_idx`` int32 ``[in]`` (only if the weight has one).
Uniform weights of Linears whose input is quantized too use compressed-tensors' ``int-quantized`` layout
(the one its tools infer for every integer scheme with activation quantization): ``weight`` int8
``[out, in]`` signed codes ``[-2^(b-1), 2^(b-1) - 1]``, ``weight_scale`` as above and ``weight_zero_point``
int8 signed zero points shaped like the scale (asymmetric only); value ``(code - zero) * scale``.
Multi-binary weights (DAQ/ABMP, dllmq format): ``weight_planes``, ``weight_alpha_r``, ``weight_alpha_c``,
``weight_orders``, ``weight_shape``.
"""

from __future__ import annotations

import dllm_kernels
import torch
from dllm_kernels import QuantSpec
from torch import Tensor

from dllm_weightquant.multibinary import MultiBinaryWeight
from dllm_weightquant.qweight import QuantizedWeight

__all__ = [
    "LAYOUTS",
    "MULTIBINARY_NAMES",
    "UNIFORM_NAMES",
    "disk_tensors",
    "multibinary_from_disk",
    "uniform_from_disk",
]

UNIFORM_NAMES = ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point", "weight_g_idx")
MULTIBINARY_NAMES = ("weight_planes", "weight_alpha_r", "weight_alpha_c", "weight_orders", "weight_shape")
LAYOUTS = ("pack-quantized", "int-quantized")
"""compressed-tensors storage formats of a uniform weight."""


def _int_tensors(qweight: QuantizedWeight) -> dict[str, Tensor]:
    """``int-quantized`` tensors: signed int8 codes, the scales, signed int8 zero points (asymmetric)."""
    if qweight.g_idx is not None:
        raise ValueError("compressed-tensors int-quantized weights carry no g_idx")
    half = 1 << (qweight.spec.bits - 1)
    codes = qweight.codes
    out = {"weight": codes if qweight.zero is None else (codes.to(torch.int16) - half).to(torch.int8)}
    out["weight_scale"] = qweight.scale
    if qweight.zero is not None:
        out["weight_zero_point"] = (qweight.zero - half).to(torch.int8)
    return out


def disk_tensors(
    qweight: QuantizedWeight | MultiBinaryWeight, layout: str = "pack-quantized"
) -> dict[str, Tensor]:
    """The tensors written for one module, by local name; ``layout`` picks the storage of a uniform
    weight (`LAYOUTS`)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "int-quantized" and isinstance(qweight, QuantizedWeight):
        return _int_tensors(qweight)
    shape = torch.tensor(qweight.shape, dtype=torch.int64)
    if isinstance(qweight, MultiBinaryWeight):
        return {
            "weight_planes": qweight.planes,
            "weight_alpha_r": qweight.alpha_r,
            "weight_alpha_c": qweight.alpha_c,
            "weight_orders": qweight.orders,
            "weight_shape": shape,
        }
    out: dict[str, Tensor] = {
        "weight_packed": qweight.packed,
        "weight_scale": qweight.scale,
        "weight_shape": shape,
    }
    if qweight.zero is not None:
        if qweight.spec.granularity == "tensor":
            raise ValueError(
                "asymmetric per-tensor weights have no pack-quantized zero-point layout; quantize with "
                "granularity 'channel' or 'group', or symmetric=True"
            )
        out["weight_zero_point"] = dllm_kernels.pack_rows(qweight.zero.to(torch.uint8), qweight.spec.bits)
    if qweight.g_idx is not None:
        out["weight_g_idx"] = qweight.g_idx
    return out


def _shape(tensors: dict[str, Tensor], name: str) -> tuple[int, int]:
    shape = tensors.get("weight_shape")
    if shape is None or shape.numel() != 2:
        raise ValueError(f"{name}: weight_shape must be an int64 tensor [2] holding [out, in]")
    return int(shape[0]), int(shape[1])


def _from_int_layout(tensors: dict[str, Tensor], spec: QuantSpec, name: str) -> QuantizedWeight:
    missing = [k for k in ("weight", "weight_scale") if k not in tensors]
    if not spec.symmetric and "weight_zero_point" not in tensors:
        missing.append("weight_zero_point")
    if missing:
        raise ValueError(f"{name}: missing quantized tensors {missing}")
    codes, half = tensors["weight"], 1 << (spec.bits - 1)
    if codes.dtype != torch.int8 or codes.dim() != 2:
        raise ValueError(
            f"{name}: int-quantized weight must be int8 [out, in], got {codes.dtype} {list(codes.shape)}"
        )
    zero = None
    if not spec.symmetric:
        codes = (codes.to(torch.int16) + half).to(torch.uint8)
        zero = tensors["weight_zero_point"].to(torch.int32) + half
    try:
        return QuantizedWeight.from_codes(codes, tensors["weight_scale"].float(), zero, spec)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from e


def uniform_from_disk(
    tensors: dict[str, Tensor], spec: QuantSpec, name: str, layout: str = "pack-quantized"
) -> QuantizedWeight:
    """Rebuild a ``QuantizedWeight`` from its tensors in ``layout`` (``name`` is for error messages)."""
    if layout == "int-quantized":
        return _from_int_layout(tensors, spec, name)
    if layout != "pack-quantized":
        raise ValueError(f"{name}: unsupported weight layout {layout!r}; readable: {LAYOUTS}")
    missing = [k for k in ("weight_packed", "weight_scale", "weight_shape") if k not in tensors]
    if not spec.symmetric and "weight_zero_point" not in tensors:
        missing.append("weight_zero_point")
    if missing:
        raise ValueError(f"{name}: missing quantized tensors {missing}")
    out, _ = _shape(tensors, name)
    zero = None
    if not spec.symmetric:
        zero = dllm_kernels.unpack_rows(tensors["weight_zero_point"], spec.bits, out, symmetric=False).to(
            torch.int32
        )
    g_idx = tensors.get("weight_g_idx")
    try:
        return QuantizedWeight(
            packed=tensors["weight_packed"],
            scale=tensors["weight_scale"].float(),
            zero=zero,
            spec=spec,
            shape=_shape(tensors, name),
            g_idx=None if g_idx is None else g_idx.to(torch.int32),
        )
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from e


def multibinary_from_disk(tensors: dict[str, Tensor], group_size: int, name: str) -> MultiBinaryWeight:
    """Rebuild a ``MultiBinaryWeight`` from its dllmq tensors."""
    missing = [k for k in MULTIBINARY_NAMES if k not in tensors]
    if missing:
        raise ValueError(f"{name}: missing multi-binary tensors {missing}")
    try:
        return MultiBinaryWeight(
            planes=tensors["weight_planes"],
            alpha_r=tensors["weight_alpha_r"],
            alpha_c=tensors["weight_alpha_c"],
            orders=tensors["weight_orders"],
            shape=_shape(tensors, name),
            group_size=group_size,
        )
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from e
