"""LLaDA2 config validation and model behaviour beyond reference parity (test_llada2_parity.py)."""

from __future__ import annotations

import pytest
import torch
from dllm_sampler import ConfigError, LLaDA2MoeConfig, Topology
from dllm_sampler.config import config_from_dict
from dllm_sampler.models import KVCache, block_causal_mask
from dllm_sampler.testing import random_llada2


def test_published_defaults_are_llada2_mini() -> None:
    c = LLaDA2MoeConfig()
    m = c.moe()
    assert (c.dims().head_dim, m.rope_dim, m.num_experts, m.top_k, m.moe_layers[0]) == (128, 64, 256, 8, 1)
    assert (m.shared_intermediate_size, c.mask_token_id) == (512, 156895)
    assert isinstance(config_from_dict(c.to_dict()), LLaDA2MoeConfig)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_experts": 6, "n_group": 4}, "not divisible by n_group"),
        ({"n_group": 4}, "needs >= 2 experts"),
        ({"score_function": "softmax"}, "softmax"),
        ({"partial_rotary_factor": 0.25, "head_dim": 6}, "even rotary width"),
        ({"rope_scaling": {"type": "yarn"}}, "rope_scaling"),
        ({"num_experts_per_tok": 3}, "exceeds the experts"),
    ],
)
def test_unsupported_or_inconsistent_configs_name_the_key(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LLaDA2MoeConfig.tiny(**overrides)


def test_softmax_routing_without_bias_runs() -> None:
    dlm = random_llada2(0, score_function="softmax", moe_router_enable_expert_bias=False)
    assert "expert_bias" not in str(list(dlm.model.state_dict()))
    assert torch.isfinite(dlm.logits(torch.tensor([[1, 2, 3, 4]]))).all()


def test_every_expert_has_its_own_named_linears() -> None:
    names = set(dict(random_llada2(0).model.named_modules()))
    for e in range(4):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            assert f"model.layers.1.mlp.experts.{e}.{proj}" in names
    assert "model.layers.1.mlp.shared_experts.down_proj" in names


def test_cache_store_in_pieces_equals_one_block_causal_pass() -> None:
    net = random_llada2(0).model
    ids = torch.tensor([[5, 17, 47, 30, 2, 47, 47, 11]])
    with torch.no_grad():
        whole = net(ids, allowed=block_causal_mask(8, 4))
        cache = KVCache()
        first = net(ids[:, :4], cache=cache, store=True)
        second = net(ids[:, 4:], cache=cache, store=True)
    assert cache.length == 8
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=1e-5, atol=1e-6)


def test_left_padding_does_not_change_the_real_tokens_logits() -> None:
    dlm = random_llada2(0)
    ids = torch.tensor([[5, 17, 30, 2]])
    padded = torch.tensor([[45, 45, 5, 17, 30, 2]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        torch.testing.assert_close(dlm.logits(padded, mask)[:, 2:], dlm.logits(ids), rtol=1e-5, atol=1e-6)


def test_dense_topology_refuses_the_moe_model() -> None:
    with pytest.raises(NotImplementedError, match="MoETopologyNames"):
        Topology(random_llada2(0).model)
