"""Model plumbing shared by the transforms: topology lookup, module replacement, transformability checks.

Transforms accept a ``dllm_sampler.DiffusionLM``, a ``dllm_sampler.Topology`` or the bare model module and
address layers by the topology's qualified names (never by substring). Online rotations and activation
or output quantizers *wrap* a linear and keep it as ``.inner``; ``Topology.weight_holders`` maps each
topology name to the module that actually holds the float weight, which is what hook-based collectors
and weight quantizers should target after a rotation.
"""

from __future__ import annotations

from dllm_sampler import LINEAR_ROLES, BlockTopology, DiffusionLM, Topology
from torch import nn

from dllm_actquant.guards import require_float_linears

__all__ = [
    "as_topology",
    "block_linears",
    "check_transformable",
    "replace_module",
]


def as_topology(model: DiffusionLM | Topology | nn.Module) -> Topology:
    """The `Topology` of a ``DiffusionLM``, a ``Topology`` (returned as is) or a LLaDA/Dream model module."""
    if isinstance(model, Topology):
        return model
    if isinstance(model, DiffusionLM):
        return model.topology
    if isinstance(model, nn.Module):
        return Topology(model)
    raise TypeError(f"expected a DiffusionLM, Topology or LLaDA/Dream nn.Module, got {type(model).__name__}")


def block_linears(block: BlockTopology, roles: tuple[str, ...] = LINEAR_ROLES) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of ``block``'s linears with the given roles."""
    return [(block.names[r], block.module(r)) for r in roles]


def check_transformable(topology: Topology, transform: str, roles: tuple[str, ...] = LINEAR_ROLES) -> None:
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
