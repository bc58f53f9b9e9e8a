"""Collectors: streamed statistics equal explicit sums, weights follow the documented formula (Dream shift
included), the model's outputs are untouched, hooks are removed, and bad input fails clearly."""

from __future__ import annotations

import math

import pytest
import torch
from dllm_calib import (
    CertaintyWeight,
    ChannelStatsCollector,
    Collector,
    HessianCollector,
    HookPoint,
    ModelFeed,
    NonFiniteActivationError,
    TensorWeight,
    UniformWeight,
    bucket_of,
    collect,
    iter_batches,
    score_confidence,
)
from hypothesis import given
from hypothesis import strategies as st

TARGETS = [
    "model.transformer.blocks.0.q_proj",
    "model.transformer.blocks.0.v_proj",
    "model.transformer.blocks.1.ff_out",
]


class Record(Collector):
    """Keeps every observed tensor: the raw material for the explicit reference sums."""

    def __init__(self, points: list[HookPoint], name: str = "record") -> None:
        self.points, self.name = points, name
        self.seen: dict[str, dict[int, torch.Tensor]] = {}

    def hook_points(self, targets):
        return self.points

    def observe(self, point, tensor, batch) -> None:
        per_state = self.seen.setdefault(f"{point.module}:{point.kind}", {})
        for row, (i, n) in enumerate(zip(batch.indices, batch.lengths, strict=True)):
            per_state[i] = tensor[row, :n].double().clone()

    def results(self):
        return self.seen


def ref_weights(state, shift: int, w: CertaintyWeight | None) -> torch.Tensor:
    """The documented per-position weight, written as a plain loop."""
    out = torch.zeros(state.length, dtype=torch.float64)
    for j in range(state.length):
        if not state.attention_mask[j]:
            continue
        if w is None:
            out[j] = 1.0
            continue
        src = j + (shift if w.respect_logit_shift else 0)
        if src < state.length and state.attention_mask[src]:
            masked, conf = bool(state.is_masked[src]), float(state.confidence[src])
        else:
            masked, conf = False, 0.0
        value = w.masked if masked else w.unmasked
        if w.confidence_exponent is not None and (masked or w.confidence_on_unmasked):
            value += conf**w.confidence_exponent
        out[j] = value if w.form == "survey" else math.sqrt(value)
    return out


def explicit_hessian(xs: dict[int, torch.Tensor], weights: dict[int, torch.Tensor], states=None):
    keep = xs.keys() if states is None else states
    s = sum(x.T @ (x * weights[i][:, None] ** 2) for i, x in xs.items() if i in keep)
    mass = sum(float((weights[i] ** 2).sum()) for i in keep)
    return s, mass


WEIGHTINGS = [
    None,
    CertaintyWeight(),
    CertaintyWeight(confidence_on_unmasked=False, unmasked=0.3),
    CertaintyWeight.reimplementation_variant(),
    CertaintyWeight(confidence_exponent=None),
]


@given(
    seed=st.integers(0, 1000),
    batch_size=st.integers(1, 6),
    weighting=st.sampled_from(WEIGHTINGS),
    arch=st.sampled_from(["llada", "dream"]),
)
def test_streamed_hessian_equals_explicit_sum(
    llada, dream, make_set, seed, batch_size, weighting, arch
) -> None:
    model = llada if arch == "llada" else dream
    targets = TARGETS if arch == "llada" else [n for n in model.topology.linear_names() if ".0." in n][:4]
    cset = make_set(9, seed=seed)
    hess = HessianCollector(weighting, dtype=torch.float64)
    rec = Record([HookPoint(t, "input") for t in targets])
    out = collect(ModelFeed(model, cset, batch_size), targets, [hess, rec])
    assert out["hessian"].keys() == set(targets)
    weights = {i: ref_weights(s, model.logit_shift, weighting) for i, s in enumerate(cset)}
    for t in targets:
        s, mass = explicit_hessian(rec.seen[f"{t}:input"], weights)
        stats = out["hessian"][t]
        assert math.isclose(stats.mass, mass, rel_tol=1e-12)
        assert stats.tokens == sum(int((w > 0).sum()) for w in weights.values())
        assert torch.allclose(stats.sum, s, rtol=1e-10, atol=1e-10)
        assert torch.allclose(stats.hessian(), s / mass, rtol=1e-10, atol=1e-12)


def test_dream_weights_read_the_next_position(dream, make_set) -> None:
    cset = make_set(4, seed=2)
    batch = next(iter_batches(cset, 4, logit_shift=1))
    w = CertaintyWeight(masked=1.0, unmasked=0.0, confidence_exponent=None).weights(batch)
    for row, state in enumerate(cset):
        valid = state.attention_mask
        for j in range(state.length):
            nxt = j + 1 < state.length and bool(valid[j + 1]) and bool(state.is_masked[j + 1])
            assert float(w[row, j]) == (1.0 if valid[j] and nxt else 0.0)
    unshifted = CertaintyWeight(masked=1.0, unmasked=0.0, confidence_exponent=None, respect_logit_shift=False)
    assert torch.equal(unshifted.weights(batch)[:, : cset[0].length][0], cset[0].is_masked.float())


def test_bucketed_hessians_partition_the_states(llada, make_set) -> None:
    cset = make_set(12, seed=4)
    hess = HessianCollector(CertaintyWeight(), num_buckets=4, dtype=torch.float64)
    rec = Record([HookPoint(TARGETS[2], "input")])
    collect(ModelFeed(llada, cset, 5), TARGETS[2:], [hess, rec])
    weights = {i: ref_weights(s, 0, CertaintyWeight()) for i, s in enumerate(cset)}
    parts = hess.bucket_results()[TARGETS[2]]
    assert len(parts) == 4
    for k, part in enumerate(parts):
        members = [i for i, s in enumerate(cset) if bucket_of(s.mask_ratio, 4) == k]
        if not members:
            assert part.mass == 0 and part.tokens == 0 and not part.sum.any()
            continue
        s, mass = explicit_hessian(rec.seen[f"{TARGETS[2]}:input"], weights, members)
        assert torch.allclose(part.sum, s, rtol=1e-10, atol=1e-10) and math.isclose(part.mass, mass)
    total = hess.results()[TARGETS[2]]
    assert torch.allclose(total.sum, sum(p.sum for p in parts))


def test_batched_padded_activations_match_single_state_forwards(llada, make_set) -> None:
    cset = make_set(7, seed=9)
    target = TARGETS[1]
    batched = collect(ModelFeed(llada, cset, 7), [target], [HessianCollector(dtype=torch.float64)])[
        "hessian"
    ][target]
    single = HessianCollector(dtype=torch.float64)
    for i in range(len(cset)):
        collect(ModelFeed(llada, cset.subset([i]), 1), [target], [single])
    alone = single.results()[target]
    assert batched.tokens == alone.tokens == sum(int(s.attention_mask.sum()) for s in cset)
    assert torch.allclose(batched.hessian(), alone.hessian(), rtol=1e-4, atol=1e-6)


def test_channel_stats_equal_explicit(llada, make_set) -> None:
    cset = make_set(8, seed=5)
    weighting = CertaintyWeight()
    chan = ChannelStatsCollector(weighting, dtype=torch.float64)
    rec = Record([HookPoint(t, "input") for t in TARGETS])
    collect(ModelFeed(llada, cset, 3), TARGETS, [chan, rec])
    weights = {i: ref_weights(s, 0, weighting) for i, s in enumerate(cset)}
    for t in TARGETS:
        xs = rec.seen[f"{t}:input"]
        rows = torch.cat([xs[i][weights[i] > 0] for i in xs])
        w = torch.cat([weights[i][weights[i] > 0] for i in xs])
        stats = chan.results()[t]
        assert torch.equal(stats.absmax, rows.abs().amax(0))
        assert torch.allclose(stats.mean_abs, (rows.abs() * w[:, None]).sum(0) / w.sum(), rtol=1e-10)
        assert stats.tokens == rows.shape[0]


def test_tensor_weights(llada, make_set) -> None:
    cset = make_set(5, seed=6)
    g = torch.Generator().manual_seed(0)
    user = [torch.rand(s.length, generator=g) for s in cset]
    hess = HessianCollector(TensorWeight(user), dtype=torch.float64)
    rec = Record([HookPoint(TARGETS[0], "input")])
    collect(ModelFeed(llada, cset, 2), TARGETS[:1], [hess, rec])
    weights = {i: user[i].double() * s.attention_mask for i, s in enumerate(cset)}
    s, _ = explicit_hessian(rec.seen[f"{TARGETS[0]}:input"], weights)
    assert torch.allclose(hess.results()[TARGETS[0]].sum, s, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="has 3 entries but state 0 has length"):
        collect(ModelFeed(llada, cset), TARGETS[:1], [HessianCollector(TensorWeight([torch.ones(3)] * 5))])
    with pytest.raises(ValueError, match="finite and >= 0"):
        TensorWeight([torch.tensor([1.0, -1.0])])


def test_shared_inputs_give_equal_but_independent_hessians(llada, make_set, monkeypatch) -> None:
    import dllm_calib.collectors.hessian as hessian_module

    calls = []
    original = hessian_module.weighted_tokens
    monkeypatch.setattr(hessian_module, "weighted_tokens", lambda *a: calls.append(1) or original(*a))
    q, k = TARGETS[0], "model.transformer.blocks.0.k_proj"
    out = collect(ModelFeed(llada, make_set(4), 2), [q, k, TARGETS[2]], [HessianCollector()])["hessian"]
    assert len(calls) == 2 * 2  # 2 batches x 2 distinct inputs (q and k share one)
    assert torch.equal(out[q].sum, out[k].sum)
    out[q].sum.add_(1.0)  # e.g. GPTQ damping in place
    assert not torch.equal(out[q].sum, out[k].sum)


def test_collectors_leave_outputs_unchanged_and_remove_hooks(llada, make_set) -> None:
    cset = make_set(6, seed=1)
    batch = next(iter_batches(cset, 6, pad_token_id=llada.pad_token_id))
    with torch.no_grad():
        before = llada.logits(batch.input_ids, batch.model_attention_mask)
    captured = []

    class Spy(Record):
        def end_batch(self, b) -> None:
            captured.append(True)

    collect(
        ModelFeed(llada, cset, 6),
        llada.topology.linear_names(),
        [
            HessianCollector(CertaintyWeight()),
            ChannelStatsCollector(),
            Spy([HookPoint(TARGETS[0], "output")]),
        ],
    )
    assert captured
    with torch.no_grad():
        after = llada.logits(batch.input_ids, batch.model_attention_mask)
    assert torch.equal(before, after)
    assert all(not m._forward_hooks for m in llada.model.modules())


def test_non_finite_activation_names_the_layer(fresh_llada, make_set) -> None:
    with torch.no_grad():
        fresh_llada.model.get_submodule("model.transformer.blocks.1.attn_out").weight[0, 0] = float("nan")
    with pytest.raises(
        NonFiniteActivationError, match=r"input of layer 'model\.transformer\.blocks\.1\.ff_proj'"
    ):
        collect(
            ModelFeed(fresh_llada, make_set(3)), fresh_llada.topology.linear_names(), [HessianCollector()]
        )
    assert all(not m._forward_hooks for m in fresh_llada.model.modules())


def test_certainty_weights_need_confidence(llada, make_set) -> None:
    bare = make_set(4, confidence=False)
    with pytest.raises(ValueError, match="score_confidence"):
        collect(ModelFeed(llada, bare), TARGETS[:1], [HessianCollector(CertaintyWeight())])
    scored = score_confidence(llada, bare, batch_size=3)
    with torch.no_grad():
        probs = llada.logits(scored[0].input_ids[None]).softmax(-1)[0].amax(-1)
    assert torch.allclose(scored[0].confidence, probs, rtol=1e-5, atol=1e-6)
    collect(ModelFeed(llada, scored), TARGETS[:1], [HessianCollector(CertaintyWeight())])


def test_bad_targets_and_collectors(llada, make_set) -> None:
    cset = make_set(2)
    with pytest.raises(ValueError, match="no module named 'nope'"):
        collect(ModelFeed(llada, cset), ["nope"], [HessianCollector()])
    with pytest.raises(ValueError, match=r"not an nn\.Linear"):
        collect(ModelFeed(llada, cset), ["model.transformer.blocks.0.attn_norm"], [HessianCollector()])
    with pytest.raises(ValueError, match="unique"):
        collect(ModelFeed(llada, cset), TARGETS, [HessianCollector(), HessianCollector()])
    with pytest.raises(ValueError, match="at least one collector"):
        collect(ModelFeed(llada, cset), TARGETS, [])
    with pytest.raises(ValueError, match="no target Linears"):
        collect(ModelFeed(llada, cset), [], [HessianCollector()])
    out = collect(
        ModelFeed(llada, cset), [TARGETS[1], TARGETS[0], TARGETS[1]], [HessianCollector(UniformWeight())]
    )
    assert sorted(out["hessian"]) == sorted(TARGETS[:2])  # a repeated target is collected once


@pytest.mark.gpu
def test_collect_on_cuda_matches_cpu(llada, fresh_llada, make_set) -> None:
    cset = make_set(6, seed=8)
    weighting = CertaintyWeight()
    cpu = collect(ModelFeed(llada, cset, 4), TARGETS, [HessianCollector(weighting, num_buckets=2)])["hessian"]
    gpu_model = fresh_llada.to("cuda")  # same seed, same weights
    gpu = collect(ModelFeed(gpu_model, cset, 4), TARGETS, [HessianCollector(weighting, num_buckets=2)])[
        "hessian"
    ]
    for t in TARGETS:
        assert gpu[t].sum.is_cuda and gpu[t].tokens == cpu[t].tokens
        assert torch.allclose(gpu[t].hessian().cpu(), cpu[t].hessian(), rtol=1e-3, atol=1e-4)
