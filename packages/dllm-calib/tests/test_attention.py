"""Recomputed attention probabilities reproduce the model's own attention output (LLaDA MHA, Dream GQA)."""

from __future__ import annotations

import pytest
import torch
from dllm_calib import (
    AttentionCollector,
    AttentionSite,
    Collector,
    HookPoint,
    ModelFeed,
    attention_sites,
    collect,
)


class Record(Collector):
    """Keeps every observed tensor per state (unpadded to the state's own length)."""

    def __init__(self, points: list[HookPoint]) -> None:
        self.points, self.name = points, "record"
        self.seen: dict[str, dict[int, torch.Tensor]] = {}

    def hook_points(self, targets):
        return self.points

    def observe(self, point, tensor, batch) -> None:
        per_state = self.seen.setdefault(f"{point.module}:{point.kind}", {})
        for row, (i, n) in enumerate(zip(batch.indices, batch.lengths, strict=True)):
            per_state[i] = tensor[row, :n].clone()

    def results(self):
        return self.seen


def _attention_outputs(model, cset, sites, batch_size):
    topo = model.topology
    blocks = {b.names["q"]: b for b in topo.blocks}
    points = []
    for site in sites:
        b = blocks[site.q_proj]
        points += [HookPoint(b.names["v"], "output"), HookPoint(b.names["o"], "input")]
    attn = AttentionCollector(sites, keep_probs=True)
    rec = Record(points)
    collect(ModelFeed(model, cset, batch_size), [topo.linear_names()[0]], [attn, rec])
    return attn, rec, blocks


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_probs_times_values_is_the_attention_output(llada, dream, rope_for, make_set, arch) -> None:
    model = llada if arch == "llada" else dream
    sites = attention_sites(model, rope_for(model))
    cset = make_set(7, seed=3)
    attn, rec, blocks = _attention_outputs(model, cset, sites, batch_size=3)
    for site in sites:
        b = blocks[site.q_proj]
        res = attn.results()[site.name]
        for i, state in enumerate(cset):
            valid = state.attention_mask
            p = res.probs[i]  # [H, L, L]
            n = state.length
            v = (
                rec.seen[f"{b.names['v']}:output"][i]
                .view(n, site.num_kv_heads, site.head_dim)
                .transpose(0, 1)
            )
            v = v.repeat_interleave(site.num_heads // site.num_kv_heads, dim=0)
            out = (p @ v).transpose(0, 1).reshape(n, -1)
            expected = rec.seen[f"{b.names['o']}:input"][i]
            assert torch.allclose(out[valid], expected[valid], atol=2e-5, rtol=1e-4), (site.name, i)
            assert torch.allclose(p[:, valid].sum(-1), torch.ones(1), atol=1e-5)
            assert not p[:, :, ~valid].any() and not p[:, ~valid].any()
            assert torch.allclose(res.importance[i], p.sum(dim=1))


def test_without_rope_the_output_is_not_reproduced(llada, make_set) -> None:
    (site,) = attention_sites(llada, rope=lambda q, k, positions: (q, k), blocks=[1])
    cset = make_set(2, seed=1, pad_tail=False)
    attn, rec, blocks = _attention_outputs(llada, cset, [site], batch_size=2)
    b = blocks[site.q_proj]
    p = attn.results()[site.name].probs[0]
    n = cset[0].length
    v = rec.seen[f"{b.names['v']}:output"][0].view(n, site.num_heads, site.head_dim).transpose(0, 1)
    out = (p @ v).transpose(0, 1).reshape(n, -1)
    assert not torch.allclose(out, rec.seen[f"{b.names['o']}:input"][0], atol=1e-4)


def test_streaming_callback_and_buckets(llada, rope_for, make_set) -> None:
    sites = attention_sites(llada, rope_for(llada), blocks=[0])
    seen = []
    attn = AttentionCollector(
        sites, on_probs=lambda name, batch, p: seen.append((name, batch.indices, p.shape))
    )
    cset = make_set(5, seed=2)
    collect(ModelFeed(llada, cset, 2), [llada.topology.linear_names()[0]], [attn])
    assert [s[1] for s in seen] == [(0, 1), (2, 3), (4,)]
    res = attn.results()[sites[0].name]
    assert res.probs is None and sorted(res.importance) == list(range(5))
    parts = attn.bucket_results(4)[sites[0].name]
    assert sorted(i for part in parts for i in part.importance) == list(range(5))


def test_site_validation() -> None:
    with pytest.raises(ValueError, match="multiple of"):
        AttentionSite("x", "q", "k", num_heads=4, num_kv_heads=3, head_dim=8)
    with pytest.raises(ValueError, match="at least one"):
        AttentionCollector([])


def test_default_rope_is_the_models(llada, rope_for) -> None:
    (site,) = attention_sites(llada, blocks=[0])
    d = site.head_dim
    q, k = torch.randn(2, site.num_heads, 7, d), torch.randn(2, site.num_kv_heads, 7, d)
    positions = torch.arange(7).expand(2, 7)
    for got, want in zip(site.rope(q, k, positions), rope_for(llada)(q, k, positions), strict=True):
        assert torch.allclose(got, want, atol=1e-5)
