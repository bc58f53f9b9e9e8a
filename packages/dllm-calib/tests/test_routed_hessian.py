"""`RoutedHessianCollector` on a random tiny LLaDA2: each routed expert's Hessian and token count are those
of exactly the real (non-padding) tokens the router sent to it, computed here from the MoE layer's own
input and routing decisions."""

from __future__ import annotations

import pytest
import torch
from dllm_calib import (
    CalibrationSet,
    CalibrationState,
    ModelFeed,
    Provenance,
    RoutedHessianCollector,
    TensorWeight,
    collect,
    routed_tokens,
)
from dllm_sampler.testing import random_llada2
from hypothesis import given
from hypothesis import strategies as st

LENGTHS = (20, 14, 9, 17)


def _states(vocab: int, mask_id: int) -> CalibrationSet:
    gen = torch.Generator().manual_seed(3)
    states = []
    for i, n in enumerate(LENGTHS):
        ids = torch.randint(0, vocab - 4, (n,), generator=gen)
        masked = torch.rand(n, generator=gen) < 0.5
        ids[masked] = mask_id
        real = torch.ones(n, dtype=torch.bool)
        states.append(CalibrationState(ids, real, masked, float(masked.float().mean()), 0.5, source_index=i))
    return CalibrationSet(tuple(states), Provenance(builder="test"), mask_id)


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    dlm = random_llada2(0, first_k_dense_replace=1, num_hidden_layers=2)
    cset = _states(dlm.vocab_size, dlm.mask_token_id)
    return dlm, ModelFeed(dlm, cset, batch_size=2)


def _expected(dlm, feed, layer: int, weights: list[torch.Tensor] | None = None):  # type: ignore[no-untyped-def]
    """Per expert (sum_t w_t^2 x_t x_t^T, tokens) over the real routed tokens of the MoE input."""
    moe = dlm.model.get_submodule(f"model.layers.{layer}.mlp")
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [
        moe.register_forward_hook(lambda m, inp, out: seen.append((inp[0].detach(), torch.empty(0)))),
        moe.routing.register_forward_hook(lambda m, inp, out: seen.append((torch.empty(0), inp[0]))),
    ]
    batches = list(feed.batches())
    with torch.no_grad():
        for batch in batches:
            feed.forward(batch)
    for h in hooks:
        h.remove()
    routings = [s[1] for s in seen if s[1].numel()]
    inputs = [s[0] for s in seen if s[0].numel()]
    num = len(moe.experts)
    sums = [torch.zeros(inputs[0].shape[-1], inputs[0].shape[-1], dtype=torch.float64) for _ in range(num)]
    counts = [0] * num
    for i, (batch, x, experts) in enumerate(zip(batches, inputs, routings, strict=True)):
        w = batch.attention_mask.double() if weights is None else weights[i]
        flat, wf = x.reshape(-1, x.shape[-1]).double(), w.reshape(-1)
        for e in range(num):
            token = routed_tokens(experts, e)
            keep = token[wf[token] > 0]
            xw = flat[keep] * wf[keep, None]
            sums[e] += xw.T @ xw
            counts[e] += keep.numel()
    return sums, counts


def test_expert_hessians_and_counts_are_those_of_the_routed_real_tokens(setup) -> None:  # type: ignore[no-untyped-def]
    dlm, feed = setup
    layer = 1
    routes = {
        f"model.layers.{layer}.mlp.experts.{e}.gate_proj": (f"model.layers.{layer}.mlp.routing", e)
        for e in range(4)
    }
    shared = f"model.layers.{layer}.mlp.shared_experts.gate_proj"
    stats = collect(feed, [*routes, shared], [RoutedHessianCollector(routes)])["hessian"]
    sums, counts = _expected(dlm, feed, layer)
    real = sum(LENGTHS)
    top_k = dlm.config.moe().top_k
    assert sum(counts) == top_k * real  # every real token reaches exactly top_k experts, padding none
    assert stats[shared].tokens == real
    for e, name in enumerate(routes):
        assert stats[name].tokens == counts[e]
        torch.testing.assert_close(stats[name].sum.double(), sums[e], rtol=1e-5, atol=1e-5)


def test_token_weighting_applies_per_routed_token(setup) -> None:  # type: ignore[no-untyped-def]
    dlm, feed = setup
    gen = torch.Generator().manual_seed(5)
    batches = list(feed.batches())
    weights = [
        torch.rand(b.attention_mask.shape, generator=gen, dtype=torch.float64) * b.attention_mask
        for b in batches
    ]
    weights[0][0, :3] = 0.0  # zero-weight tokens do not count
    by_index = {
        i: w[j, :n]
        for w, b in zip(weights, batches, strict=True)
        for j, (i, n) in enumerate(zip(b.indices, b.lengths, strict=True))
    }
    per_state = [by_index[i] for i in range(len(LENGTHS))]
    routes = {f"model.layers.1.mlp.experts.{e}.up_proj": ("model.layers.1.mlp.routing", e) for e in range(4)}
    stats = collect(feed, list(routes), [RoutedHessianCollector(routes, TensorWeight(per_state))])["hessian"]
    sums, counts = _expected(dlm, feed, 1, weights)
    for e, name in enumerate(routes):
        assert stats[name].tokens == counts[e]
        torch.testing.assert_close(stats[name].sum.double(), sums[e], rtol=1e-5, atol=1e-5)


@given(
    n=st.integers(1, 40),
    experts=st.integers(2, 8),
    k=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_routed_tokens_are_the_rows_the_moe_forward_hands_an_expert(
    n: int, experts: int, k: int, seed: int
) -> None:
    k = min(k, experts)
    gen = torch.Generator().manual_seed(seed)
    choice = torch.rand(n, experts, generator=gen).topk(k, dim=-1).indices  # distinct experts per token
    for e in range(experts):
        token, _ = torch.nonzero(choice == e, as_tuple=True)  # LLaDA2SparseMoe.forward's selection
        assert torch.equal(routed_tokens(choice, e), token)
