"""Activation outliers on random tiny LLaDA and Dream models: rows cover every layer, input and bucket,
ratios are >= 1 and equal a direct computation with a forward hook on one layer."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from dllm_bench.evaluation import INPUT_ROLES, activation_outliers, outlier_states
from dllm_calib import mask_ratio_buckets
from dllm_sampler import DiffusionLM, load, tiny_config
from dllm_sampler.testing import random_char_model


def direct_ratio(dlm: DiffusionLM, module: str, states, bucket: int, buckets: int) -> tuple[float, int]:
    """``max|x| / RMS(x)`` and the token count of ``module``'s input over the real tokens of the states in
    ``bucket``, one state per forward pass."""
    seen: list[torch.Tensor] = []
    handle = dlm.model.get_submodule(module).register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    picked = mask_ratio_buckets(states.mask_ratios(), buckets) == bucket
    xs = []
    with torch.no_grad():
        for state, keep in zip(states, picked.tolist(), strict=True):
            if keep:
                dlm.logits(state.input_ids[None], state.attention_mask[None].long())
                xs.append(seen.pop()[0][state.attention_mask])
    handle.remove()
    x = torch.cat(xs).double()
    return float(x.abs().max() / x.square().mean().sqrt()), x.shape[0]


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_rows_cover_every_input_and_match_a_direct_computation(arch: str) -> None:
    dlm = random_char_model(arch)
    states = outlier_states(dlm, problems=3, num_buckets=4, seed=0)
    assert len(states) == 12 and states.mask_ratios()[0] > 0.7 and states.mask_ratios()[-1] < 0.3
    rows = activation_outliers(dlm, states, num_buckets=4, batch_size=5)

    real_tokens = sum(int(s.attention_mask.sum()) for s in states)
    layers = range(len(dlm.topology))
    assert {(r.layer, r.role) for r in rows} == {(i, role) for i in layers for role in INPUT_ROLES}
    for layer in layers:
        for role in INPUT_ROLES:
            assert sum(r.tokens for r in rows if (r.layer, r.role) == (layer, role)) == real_tokens
    assert all(r.outlier_ratio >= 1.0 and r.outlier_ratio == pytest.approx(r.absmax / r.rms) for r in rows)
    assert all(r.mask_hi - r.mask_lo == pytest.approx(0.25) for r in rows)

    down = dlm.topology.block(1).names["down"]
    for row in (r for r in rows if r.module == down):
        ratio, tokens = direct_ratio(dlm, down, states, row.bucket, 4)
        assert row.tokens == tokens
        assert row.outlier_ratio == pytest.approx(ratio, rel=1e-4)


def test_a_planted_outlier_channel_raises_the_ratio_of_its_layer_only() -> None:
    dlm = random_char_model("llada")
    states = outlier_states(dlm, problems=2, num_buckets=2)
    before = {(r.module, r.bucket): r.outlier_ratio for r in activation_outliers(dlm, states, num_buckets=2)}
    norm = dlm.topology.block(0).mlp_norm  # feeds gate and up of block 0
    with torch.no_grad():
        norm.weight[5] *= 50.0
    after = {(r.module, r.bucket): r.outlier_ratio for r in activation_outliers(dlm, states, num_buckets=2)}
    names = dlm.topology.block(0).names
    for (module, bucket), ratio in after.items():
        if module == names["up"]:
            assert ratio > 3 * before[(module, bucket)]
        elif module in (names["q"], names["o"]):  # upstream of the planted channel
            assert ratio == before[(module, bucket)]


def test_the_default_states_need_a_tokenizer() -> None:
    dlm = DiffusionLM.from_config(tiny_config("dream"), seed=0)
    with pytest.raises(ValueError, match="no tokenizer"):
        activation_outliers(dlm)


@pytest.mark.parametrize("shared", [1, 0])
def test_llada2_rows_use_the_fused_qkv_and_the_shared_expert(shared: int) -> None:
    """LLaDA2: the fused qkv stands for the attention input; a routed layer's MLP rows come from its shared
    expert, and without one the routed layer has no MLP rows (each expert reads a subset of the tokens)."""
    dlm = load("tiny-llada2")
    if not shared:  # the same weights without the shared experts
        config = dataclasses.replace(dlm.config, num_shared_experts=0)
        stripped = DiffusionLM.from_config(config, seed=0)
        state = {k: v for k, v in dlm.model.state_dict().items() if ".shared_experts." not in k}
        stripped.model.load_state_dict(state)
        stripped.tokenizer = dlm.tokenizer
        dlm = stripped
    states = outlier_states(dlm, problems=2, num_buckets=2, seed=0)
    rows = activation_outliers(dlm, states, num_buckets=2, batch_size=4)
    routed = {b.index for b in dlm.topology if b.routes}
    expected = {
        (b.index, role)
        for b in dlm.topology
        for role in INPUT_ROLES
        if shared or b.index not in routed or role in ("qkv", "o")
    }
    assert routed and {(r.layer, r.role) for r in rows} == expected
    block = dlm.topology.block(min(routed))
    modules = {r.role: r.module for r in rows if r.layer == block.index}
    assert modules["qkv"] == block.names["qkv"]
    if shared:
        assert (
            modules["gate_up"] == block.names["shared.up"] and modules["down"] == block.names["shared.down"]
        )
