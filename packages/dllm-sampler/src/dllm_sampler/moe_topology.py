"""Topology of a mixture-of-experts model (LLaDA2): every block's linears by role, grouped by the
activation they read, and which routing site feeds each routed expert.

Built from the architecture's `MoETopologyNames` and the config's `MoEDims` (which layers are routed, how
many experts, whether a shared expert exists). Roles of a block:

* ``qkv`` (fused query/key/value) and ``o`` in every block;
* dense layers: ``gate``, ``up``, ``down``;
* routed layers: ``expert.{e}.gate`` / ``.up`` / ``.down`` for every expert ``e`` and ``shared.gate`` /
  ``.up`` / ``.down`` for the shared expert. The router (``mlp.gate``, an `LLaDA2Router`, not an
  ``nn.Linear``) is no block linear, so weight quantizers leave it in float.

Routed experts only receive the tokens routed to them (inputs ``[n_e, C]``); `MoEBlockTopology.routes`
maps each expert role to ``(routing site, expert index)`` so collectors can find those tokens' positions.
The invariance-preserving edits of the dense `dllm_sampler.topology.Topology` (norm folds, rotations) are
not defined here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from dllm_sampler.models.spec import ArchSpec, MoETopologyNames, spec_for_model
from dllm_sampler.topology import BlockMap, weight_holder

__all__ = ["EXPERT_PARTS", "MoEBlockTopology", "MoETopology"]

EXPERT_PARTS = ("gate", "up", "down")
"""The linears of one expert MLP, in forward order."""


@dataclass(frozen=True)
class MoEBlockTopology:
    """One block of an MoE model.

    Attributes:
        index: the block index.
        names: role -> qualified module name: the linears (see the module docstring) and ``qk``, the
            attention's query/key site after RoPE (``dllm_sampler.models.layers.QKSite``).
        groups: the linear roles grouped by the activation they read, in forward order.
        routes: routed expert role -> (qualified name of the block's `Routing` site, expert index).
        num_experts: routed experts in this block (0 for a dense layer).
    """

    index: int
    names: dict[str, str]
    groups: tuple[tuple[str, ...], ...]
    routes: dict[str, tuple[str, int]]
    num_experts: int
    model: nn.Module = field(repr=False, compare=False)

    def linear_roles(self) -> tuple[str, ...]:
        """Every linear role of the block, in forward order."""
        return tuple(role for group in self.groups for role in group)

    def input_groups(self) -> tuple[tuple[str, ...], ...]:
        """The linear roles grouped by the activation they read (`groups`)."""
        return self.groups

    def linear_names(self) -> list[str]:
        """Qualified names of the block's linears, in `linear_roles` order."""
        return [self.names[role] for role in self.linear_roles()]

    def module(self, role: str) -> nn.Module:
        """The module playing ``role``."""
        if role not in self.names:
            raise KeyError(f"unknown role {role!r} in block {self.index}; roles are {list(self.names)}")
        return self.model.get_submodule(self.names[role])

    def weight_holder(self, role: str) -> str:
        """Qualified name of the module holding ``role``'s weight through run-time wrappers."""
        return weight_holder(self.model, self.names[role])

    def expert_role(self, expert: int, part: str) -> str:
        """The role of linear ``part`` (gate, up, down) of routed expert ``expert``."""
        return f"expert.{expert}.{part}"


class MoETopology(BlockMap[MoEBlockTopology]):
    """The block map of an MoE model (see the module docstring); holds no weights of its own."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.spec: ArchSpec = spec_for_model(model)
        names = self.spec.names
        if not isinstance(names, MoETopologyNames):
            raise TypeError(f"{self.spec.display_name} is a dense model; use dllm_sampler.Topology")
        dims = model.config.dims()  # type: ignore[union-attr]
        moe = model.config.moe()  # type: ignore[union-attr]
        self.blocks = [
            self._block(names, i, moe.num_experts if i in moe.moe_layers else 0, moe.shared_intermediate_size)
            for i in range(dims.num_layers)
        ]

    def _block(self, n: MoETopologyNames, i: int, experts: int, shared_width: int) -> MoEBlockTopology:
        prefix = f"{n.blocks}.{i}."
        names = {"qkv": prefix + n.qkv, "qk": prefix + n.qk, "o": prefix + n.o}
        groups: list[tuple[str, ...]] = [("qkv",), ("o",)]
        routes: dict[str, tuple[str, int]] = {}
        if not experts:
            names |= {"gate": prefix + n.dense_gate, "up": prefix + n.dense_up, "down": prefix + n.dense_down}
            groups += [("gate", "up"), ("down",)]
        else:
            parts = {"gate": n.expert_gate, "up": n.expert_up, "down": n.expert_down}
            owners = {f"expert.{e}": f"{prefix}{n.experts}.{e}" for e in range(experts)}
            if shared_width:
                owners["shared"] = prefix + n.shared_experts
            for owner, path in owners.items():
                names |= {f"{owner}.{part}": f"{path}.{parts[part]}" for part in EXPERT_PARTS}
            for e in range(experts):
                routes |= {f"expert.{e}.{part}": (prefix + n.routing, e) for part in EXPERT_PARTS}
            groups += [
                tuple(f"{owner}.{part}" for owner in owners for part in ("gate", "up")),
                tuple(f"{owner}.down" for owner in owners),
            ]
        return MoEBlockTopology(i, names, tuple(groups), routes, experts, self.model)
