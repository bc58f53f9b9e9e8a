"""Model plumbing shared by the transforms: topology lookup, module replacement, wrapped-linear names.

Transforms accept a ``dllm_sampler.DiffusionLM``, a ``dllm_sampler.Topology`` or the bare model module and
address layers by the topology's qualified names (never by substring). Online rotations and activation
quantizers *wrap* a linear; `linear_targets` maps each topology name to the module that actually holds
the float weight (``<name>.inner`` when wrapped), which is what hook-based collectors and weight
quantizers should target after a rotation.
"""

from __future__ import annotations

from typing import Any

from dllm_sampler import BlockTopology, DiffusionLM, Topology
from torch import nn

from dllm_actquant.guards import require_float_linears

__all__ = [
    "as_topology",
    "block_linears",
    "check_transformable",
    "linear_targets",
    "replace_module",
    "unwrap",
]

ROLES = ("q", "k", "v", "o", "gate", "up", "down")


def as_topology(model: DiffusionLM | Topology | nn.Module) -> Topology:
    """The `Topology` of a ``DiffusionLM``, a ``Topology`` (returned as is) or a LLaDA/Dream model module."""
    if isinstance(model, Topology):
        return model
    if isinstance(model, DiffusionLM):
        return model.topology
    if isinstance(model, nn.Module):
        return Topology(model)
    raise TypeError(f"expected a DiffusionLM, Topology or LLaDA/Dream nn.Module, got {type(model).__name__}")


def block_linears(block: BlockTopology, roles: tuple[str, ...] = ROLES) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of ``block``'s linears with the given roles."""
    return [(block.names[r], block.module(r)) for r in roles]


def check_transformable(topology: Topology, transform: str, roles: tuple[str, ...] = ROLES) -> None:
    """Every block linear of ``roles`` must be a float, unwrapped, unquantized ``nn.Linear``."""
    for block in topology:
        require_float_linears(block_linears(block, roles), transform)


def replace_module(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at qualified ``name`` under ``root``; returns the module it replaced."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    old = parent.get_submodule(child)
    setattr(parent, child, new)
    return old


def unwrap(module: nn.Module) -> nn.Module:
    """Follow ``.inner`` through wrappers (online rotations, activation quantizers) to the wrapped layer."""
    seen = 0
    while hasattr(module, "inner") and isinstance(module.inner, nn.Module):
        module = module.inner
        seen += 1
        if seen > 16:
            raise RuntimeError("wrapper chain deeper than 16 levels; is a module wrapping itself?")
    return module


def linear_targets(model: Any, include_head: bool = False) -> dict[str, str]:
    """Topology linear name -> qualified name of the module holding its weight (through wrappers).

    Unwrapped linears map to themselves; a linear wrapped by an online rotation maps to ``<name>.inner``,
    whose input is the rotated activation (hooks there see what the quantizer sees).
    """
    topology = as_topology(model)
    out: dict[str, str] = {}
    for name in topology.linear_names(include_head=include_head):
        module, path = topology.model.get_submodule(name), name
        while hasattr(module, "inner") and isinstance(module.inner, nn.Module):
            module, path = module.inner, f"{path}.inner"
        out[name] = path
    return out
