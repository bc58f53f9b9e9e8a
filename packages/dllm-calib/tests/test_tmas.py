"""TMAS on a small random LLaDA/Dream with the real sampler: quotas, snapshots, confidence, shortfalls."""

from __future__ import annotations

import pytest
import torch
from dllm_calib import ListSource, TMASConfig, bucket_of, quota_counts
from dllm_sampler import DreamGenerationConfig, LLaDAGenerationConfig

PROMPTS = ListSource([f"Q{i}: what is {i} plus {2 * i}?" for i in range(12)])
# 8 steps over 16 masks: every step commits 2, so the response mask ratios are 1, 7/8, ..., 1/8
LLADA_SAMPLER = LLaDAGenerationConfig(steps=8, gen_length=16, block_length=16)


def _tmas(**kwargs) -> TMASConfig:
    return TMASConfig(
        **{"num_prompts": 6, "num_samples": 30, "batch_size": 4, "sampler": LLADA_SAMPLER, **kwargs}
    )


@pytest.fixture(scope="module")
def tmas_set(llada):
    return _tmas().build(llada, PROMPTS)


def test_quotas_are_honoured(tmas_set) -> None:
    counts = [0] * 4
    for state in tmas_set:
        counts[bucket_of(state.mask_ratio, 4)] += 1
    assert counts == quota_counts((0.3, 0.2, 0.2, 0.3), 30) == [9, 6, 6, 9]
    params = tmas_set.provenance.params
    assert params["drawn_per_bucket"] == counts and params["snapshots_per_bucket"] == [12, 12, 12, 12]
    buckets = [bucket_of(s.mask_ratio, 4) for s in tmas_set]
    assert buckets == sorted(buckets)  # bucket-major order
    assert len({(s.source_index, s.step) for s in tmas_set}) == 30  # drawn without replacement


def test_states_are_real_sampler_snapshots(llada, tmas_set) -> None:
    prompts = [llada.encode(t) for t in PROMPTS.texts()]
    for state in tmas_set:
        prompt = prompts[state.source_index]
        lp = len(prompt)
        assert state.input_ids[:lp].tolist() == prompt and not state.is_masked[:lp].any()
        assert state.length == lp + 16
        assert int(state.is_masked.sum()) == 16 - 2 * state.step  # what the linear schedule leaves masked
        assert state.mask_ratio == state.t == pytest.approx((16 - 2 * state.step) / 16)


def test_confidence_is_the_models_max_probability(llada, tmas_set) -> None:
    assert tmas_set.has_confidence
    state = tmas_set[3]
    with torch.no_grad():
        probs = llada.logits(state.input_ids[None]).softmax(-1)[0]
    assert torch.allclose(state.confidence, probs.amax(-1), rtol=1e-5, atol=1e-6)


def test_deterministic_for_a_seed(llada, tmas_set) -> None:
    again = _tmas().build(llada, PROMPTS)
    assert [(s.source_index, s.step) for s in again] == [(s.source_index, s.step) for s in tmas_set]
    assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(again, tmas_set, strict=True))
    other = _tmas(seed=1).build(llada, PROMPTS)
    assert [(s.source_index, s.step) for s in other] != [(s.source_index, s.step) for s in tmas_set]


def test_short_bucket_errors_or_redistributes(llada) -> None:
    # 46 samples want [14, 9, 9, 14] but every bucket holds 12 snapshots
    with pytest.raises(ValueError, match=r"bucket 0 .* has 12 snapshots but its quota needs 14"):
        _tmas(num_samples=46).build(llada, PROMPTS)
    cset = _tmas(num_samples=46, on_short="redistribute").build(llada, PROMPTS)
    assert len(cset) == 46
    # bucket 0's deficit of 2 goes to the largest quota with spare snapshots (bucket 1: 9 -> 11), then
    # bucket 3's deficit of 2 to bucket 1 (its last spare) and bucket 2
    assert cset.provenance.params["drawn_per_bucket"] == [12, 12, 10, 12]
    assert any("moved" in note for note in cset.provenance.notes)
    with pytest.raises(ValueError, match="produced only 48 snapshots"):
        _tmas(num_samples=49, on_short="redistribute").build(llada, PROMPTS)


def test_dream_ragged_prompts_are_unpadded(dream) -> None:
    config = TMASConfig(
        num_prompts=3,
        num_samples=6,
        batch_size=3,
        quotas=(0.5, 0.5),
        num_buckets=2,
        sampler=DreamGenerationConfig(max_new_tokens=8, steps=4),
    )
    texts = ListSource(["a", "a longer prompt", "mid prompt"])
    cset = config.build(dream, texts)
    for state in cset:
        prompt = [dream.bos_token_id, *dream.encode(list(texts.texts())[state.source_index])]
        assert state.input_ids[: len(prompt)].tolist() == prompt
        assert state.length == len(prompt) + 8 and state.attention_mask.all()
        assert not (state.input_ids == dream.pad_token_id).any()
    assert cset.provenance.sampler["config"]["max_new_tokens"] == 8
