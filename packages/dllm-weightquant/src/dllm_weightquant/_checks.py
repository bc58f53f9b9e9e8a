"""Input validation shared by the quantizers; every check raises ``ValueError`` naming the problem and fix."""

from __future__ import annotations

from dllm_kernels import QuantSpec
from dllm_sampler import all_finite, describe_nonfinite
from torch import Tensor

__all__ = ["check_hessian", "check_uniform_spec", "check_weight", "n_groups"]


def check_weight(weight: object, name: str = "weight") -> Tensor:
    """A 2-D finite float tensor ``[out, in]``, detached; ``name`` (e.g. the module's qualified name plus
    ".weight") is what the errors call it."""
    if not isinstance(weight, Tensor) or not weight.is_floating_point():
        raise ValueError(
            f"{name} must be a float torch.Tensor [out, in], got {getattr(weight, 'dtype', type(weight))}"
        )
    if weight.dim() != 2 or weight.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 2-D tensor [out, in], got shape {tuple(weight.shape)}")
    problem = describe_nonfinite(weight)
    if problem:
        raise ValueError(
            f"{name} contains NaN or Inf values ({problem}); quantize a finite weight (check the checkpoint "
            "or the transforms applied before quantization)"
        )
    return weight.detach()


def check_hessian(hessian: object, in_features: int, name: str = "hessian") -> Tensor:
    """A finite float ``[in, in]`` tensor matching the weight's input width, detached."""
    if not isinstance(hessian, Tensor) or not hessian.is_floating_point():
        raise ValueError(
            f"{name} must be a float torch.Tensor [in, in] (e.g. X^T X from dllm_calib), got "
            f"{getattr(hessian, 'dtype', type(hessian))}"
        )
    if tuple(hessian.shape) != (in_features, in_features):
        raise ValueError(
            f"{name} must have shape [{in_features}, {in_features}] (the weight's input width), "
            f"got {list(hessian.shape)}"
        )
    if not all_finite(hessian):
        raise ValueError(
            f"{name} contains NaN or Inf values; recollect the statistics (an overflow in float16 "
            "activations is the usual cause: accumulate in float64)"
        )
    return hessian.detach()


def check_uniform_spec(spec: object, in_features: int, method: str) -> QuantSpec:
    """A ``QuantSpec`` usable for integer weight quantization of a layer with ``in_features`` inputs."""
    if not isinstance(spec, QuantSpec):
        raise ValueError(f"{method}: spec must be a dllm_kernels.QuantSpec, got {type(spec).__name__}")
    if spec.is_fp8:
        raise ValueError(
            f"{method}: fp8 weights (QuantSpec(type='float')) are not supported; use an integer spec "
            "(type='int', bits 2/3/4/8)"
        )
    if spec.granularity == "token":
        raise ValueError(
            f"{method}: granularity 'token' is for activations; use 'channel', 'group' or 'tensor' "
            "for weights"
        )
    if spec.granularity == "group" and in_features % int(spec.group_size or 0):
        raise ValueError(
            f"{method}: group_size={spec.group_size} does not divide the input width {in_features}; pick a "
            "group size that divides it (e.g. 128 for 4096/12288) or use granularity='channel'"
        )
    return spec


def n_groups(spec: QuantSpec, in_features: int) -> int:
    """Number of scale groups along a row: in/group_size for 'group', else 1."""
    return in_features // spec.group_size if spec.granularity == "group" and spec.group_size else 1
