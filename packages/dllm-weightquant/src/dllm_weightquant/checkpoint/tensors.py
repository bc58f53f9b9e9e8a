"""On-disk tensors of one quantized Linear (names relative to the module; see ``FORMAT.md``).

Uniform weights use the compressed-tensors ``pack-quantized`` layout: ``weight_packed`` int32
``[out, ceil(in*b/32)]``, ``weight_scale`` float32 ``[out, in/group]`` (``[out, 1]`` channel, ``[1]`` tensor),
``weight_shape`` int64 ``[2]``, ``weight_zero_point`` int32 ``[ceil(out*b/32), in/group]`` (unsigned zero
points packed along dim 0, asymmetric only) and ``weight_g_idx`` int32 ``[in]`` (only if the weight has one).
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

__all__ = ["MULTIBINARY_NAMES", "UNIFORM_NAMES", "disk_tensors", "multibinary_from_disk", "uniform_from_disk"]

UNIFORM_NAMES = ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point", "weight_g_idx")
MULTIBINARY_NAMES = ("weight_planes", "weight_alpha_r", "weight_alpha_c", "weight_orders", "weight_shape")


def disk_tensors(qweight: QuantizedWeight | MultiBinaryWeight) -> dict[str, Tensor]:
    """The tensors written for one module, by local name."""
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


def uniform_from_disk(tensors: dict[str, Tensor], spec: QuantSpec, name: str) -> QuantizedWeight:
    """Rebuild a ``QuantizedWeight`` from its pack-quantized tensors (``name`` is for error messages)."""
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
