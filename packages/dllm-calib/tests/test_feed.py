"""`Feed`s (a whole model over a calibration set or over token batches) and the input-sample collector."""

from __future__ import annotations

import pytest
import torch
from dllm_calib import (
    Feed,
    InputSampleCollector,
    ModelFeed,
    TokenFeed,
    collect,
    iter_batches,
)

TARGETS = ["model.transformer.blocks.0.q_proj", "model.transformer.blocks.1.ff_out"]


def test_model_feed_batches_are_iter_batches_and_its_forward_is_logits(llada, make_set) -> None:
    cset = make_set(5, seed=2)
    feed = ModelFeed(llada, cset, batch_size=2)
    assert isinstance(feed, Feed) and feed.module is llada.model
    expected = list(iter_batches(cset, 2, "cpu", pad_token_id=llada.pad_token_id, logit_shift=0))
    got = list(feed.batches())
    assert [b.indices for b in got] == [b.indices for b in expected] == [(0, 1), (2, 3), (4,)]
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.attention_mask, b.attention_mask)
    with torch.no_grad():
        assert torch.equal(feed.forward(got[0]), llada.logits(got[0].input_ids, got[0].model_attention_mask))
    with pytest.raises(ValueError, match="batch_size"):
        ModelFeed(llada, cset, batch_size=0)


def test_token_feed_marks_mask_tokens_and_padding(dream) -> None:
    ids = torch.tensor([[5, 6, dream.mask_token_id, 7], [8, dream.mask_token_id, 9, 10]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    batch, second = TokenFeed(dream, [(ids, mask), ids[:1]]).batches()
    assert batch.indices == (0, 1) and second.indices == (2,)  # numbered across batches, as in a set
    assert torch.equal(batch.attention_mask, mask.bool())
    assert batch.is_masked.tolist() == [[False, False, True, False], [False, True, False, False]]
    assert batch.mask_ratio.tolist() == [1 / 3, 1 / 4] and batch.logit_shift == 1
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        list(TokenFeed(dream, [ids[0]]).batches())


def test_input_samples_are_the_real_token_rows_and_their_absmax(llada, make_set) -> None:
    cset = make_set(6, seed=3)  # every third state has two padded tokens
    seen: dict[str, list[torch.Tensor]] = {t: [] for t in TARGETS}
    handles = [
        llada.model.get_submodule(t).register_forward_hook(
            lambda _m, inp, _o, t=t: seen[t].append(inp[0].detach())
        )
        for t in TARGETS
    ]
    try:
        feed = ModelFeed(llada, cset, batch_size=4)
        got = collect(feed, TARGETS, [InputSampleCollector(max_tokens=10_000)])["inputs"]
        small = collect(feed, TARGETS, [InputSampleCollector(max_tokens=7, seed=5)])["inputs"]
    finally:
        for h in handles:
            h.remove()
    batches = list(feed.batches())
    real = sum(int(s.attention_mask.sum()) for s in cset)
    for t in TARGETS:
        rows = torch.cat(
            [
                x.reshape(-1, x.shape[-1])[b.attention_mask.reshape(-1)]
                for x, b in zip(seen[t][: len(batches)], batches, strict=True)
            ]
        )
        assert rows.shape[0] == real
        assert torch.equal(got[t].samples, rows) and torch.equal(got[t].absmax, rows.abs().amax(0))
        assert small[t].samples.shape == (7, rows.shape[1])
        assert torch.equal(small[t].absmax, got[t].absmax)  # the absmax is exact whatever is sampled
        assert all(any(torch.equal(r, x) for x in rows) for r in small[t].samples)
    with pytest.raises(ValueError, match="max_tokens"):
        InputSampleCollector(max_tokens=0)


def test_batches_move_between_devices_whole(llada, make_set) -> None:
    (batch,) = ModelFeed(llada, make_set(2, seed=1), batch_size=2).batches()
    moved = batch.to("meta")
    assert {t.device.type for t in (moved.input_ids, moved.attention_mask, moved.is_masked)} == {"meta"}
    assert moved.confidence is not None and moved.confidence.is_meta and moved.indices == batch.indices
