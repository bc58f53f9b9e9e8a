"""`quantize_activations`: wrap a model's block linears in `ActQuantLinear` (after any transform)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from dllm_sampler import LINEAR_ROLES, DiffusionLM, Topology
from torch import nn

from dllm_actquant.act_quant import ActQuantConfig, StaticActParams
from dllm_actquant.guards import QUANTIZED_ATTR
from dllm_actquant.linear import ActQuantLinear
from dllm_actquant.modules import as_topology, replace_module
from dllm_actquant.rotation import OnlineRotation
from dllm_actquant.vquant import VQuantOutput

__all__ = ["quantize_activations"]


def _static_for(
    static: Mapping[str, Any] | None, keys: Sequence[str], config: ActQuantConfig
) -> StaticActParams | None:
    if config.dynamic:
        return None
    if static is None:
        raise ValueError(
            "a static ('tensor') activation config needs static= statistics: per-linear StaticActParams or "
            "absmax tensors (e.g. dllm_calib ChannelStats) keyed by linear name"
        )
    for key in keys:
        if key in static:
            value = static[key]
            if isinstance(value, StaticActParams):
                return value
            return StaticActParams.from_absmax(getattr(value, "absmax", value), config)
    raise KeyError(
        f"no static activation statistics for {keys[0]!r} (also tried {list(keys[1:])}); collect them at the "
        "input each quantizer sees (Topology.weight_holders gives the names inside online rotations)"
    )


def quantize_activations(
    model: DiffusionLM | Topology | nn.Module,
    config: ActQuantConfig,
    *,
    mode: Literal["fake", "kernel"] = "fake",
    weight_bits: int | None = None,
    static: Mapping[str, Any] | None = None,
    roles: Sequence[str] = LINEAR_ROLES,
    blocks: Sequence[int] | None = None,
) -> list[str]:
    """Wrap the ``roles`` linears of ``blocks`` (default all) in `ActQuantLinear`; returns their names.

    A linear inside an `OnlineRotation` (or a `VQuantOutput`) is wrapped in place (``<name>.inner``), so
    the quantizer sees the rotated input (and V is quantized after the linear's output). The LM head is
    never wrapped. ``static`` maps linear names (topology names, or the ``.inner`` names of
    ``Topology.weight_holders``) to `StaticActParams` or absmax statistics; it is required for static
    configs. ``weight_bits`` selects the integer kernels' weight width in ``mode="kernel"``.
    """
    topology = as_topology(model)
    chosen = [topology.block(i) for i in blocks] if blocks is not None else list(topology)
    for block in chosen:
        unknown = set(roles) - set(block.linear_roles())
        if unknown:
            raise ValueError(
                f"unknown linear roles {sorted(unknown)} in block {block.index}; its roles are "
                f"{list(block.linear_roles())}"
            )
    root = topology.model
    plan: list[tuple[str, str, ActQuantLinear]] = []
    for block in chosen:  # build (and validate) every wrapper before touching the model
        for role in roles:
            name = block.names[role]
            module = root.get_submodule(name)
            path = name
            while isinstance(module, VQuantOutput | OnlineRotation):  # the quantizer goes inside both
                path, module = f"{path}.inner", module.inner
            marker = getattr(module, QUANTIZED_ATTR, "")
            if isinstance(module, ActQuantLinear) or "activations" in marker:
                raise ValueError(f"{name!r} already has an activation quantizer; wrap each linear once")
            if mode == "kernel" and "weights" in marker:
                raise ValueError(
                    f"{name!r} holds quantized weights ({marker}); the kernel mode re-quantizes a float "
                    "nn.Linear itself. Use mode='fake' on top of a weight quantizer."
                )
            params = _static_for(static, [name, path], config)
            wrapper = ActQuantLinear(module, config, static=params, mode=mode, weight_bits=weight_bits)
            plan.append((name, path, wrapper))
    for _, path, wrapper in plan:
        replace_module(root, path, wrapper)
    return [name for name, _, _ in plan]
