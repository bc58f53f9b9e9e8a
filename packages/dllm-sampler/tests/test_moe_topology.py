"""`MoETopology`: LLaDA2's block linears by role, grouped by the activation they read, and the routing
site of every routed expert, for dense and routed layers with and without a shared expert."""

from __future__ import annotations

import pytest
from dllm_sampler import EXPERT_PARTS, MoETopology
from dllm_sampler.testing import LLADA2_PARITY_CONFIGS, random_llada2
from torch import nn


@pytest.mark.parametrize("name", sorted(LLADA2_PARITY_CONFIGS))
def test_roles_name_every_linear_of_the_model_once(name: str) -> None:
    dlm = random_llada2(0, **LLADA2_PARITY_CONFIGS[name])
    topology = dlm.topology
    assert isinstance(topology, MoETopology)
    linears = {n for n, m in dlm.model.named_modules() if isinstance(m, nn.Linear)}
    head = {topology.head_name} if topology.head_name is not None else set()
    assert sorted(topology.linear_names()) == sorted(linears - head)  # the router is no nn.Linear
    moe = dlm.config.moe()
    for block in topology:
        assert block.linear_roles()[:2] == ("qkv", "o")
        assert {block.names[r] for r in block.linear_roles()} == set(block.linear_names())
        if block.index not in moe.moe_layers:
            assert block.num_experts == 0 and not block.routes
            assert block.input_groups()[2:] == (("gate", "up"), ("down",))
            continue
        assert block.num_experts == moe.num_experts
        site = f"model.layers.{block.index}.mlp.routing"
        assert block.routes == {
            block.expert_role(e, part): (site, e) for e in range(moe.num_experts) for part in EXPERT_PARTS
        }
        gate_up, down = block.input_groups()[2:]
        shared = ("shared.gate", "shared.up") if moe.shared_intermediate_size else ()
        assert gate_up == (
            *(block.expert_role(e, p) for e in range(moe.num_experts) for p in ("gate", "up")),
            *shared,
        )
        assert all(r.endswith(".down") for r in down) and len(down) == moe.num_experts + bool(shared)
        assert block.module("expert.1.down") is dlm.model.get_submodule(
            f"model.layers.{block.index}.mlp.experts.1.down_proj"
        )
