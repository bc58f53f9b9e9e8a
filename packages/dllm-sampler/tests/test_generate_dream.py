"""Dream sampler: token sampling and confidences, transfer counts per step, origin, alg_temp, padding."""

from __future__ import annotations

import math

import pytest
import torch
from dllm_sampler import (
    DreamGenerationConfig,
    StepState,
    dream_sample_tokens,
    dream_transfer_count,
    generate_dream,
)

SCORED = ["maskgit_plus", "topk_margin", "entropy"]


def _prompt(model, b: int = 2, lp: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.vocab_size - 4, (b, lp), generator=g)


def _run(model, prompt, cfg, attention_mask=None, **kw) -> tuple[torch.Tensor, list[StepState]]:
    states: list[StepState] = []
    out = generate_dream(model, prompt, attention_mask, cfg, on_step=states.append, **kw)
    return out, states


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"eps": 0.0}, "eps"),
        ({"alg": "greedy"}, "alg must be one of"),
        ({"alg_temp": -1.0}, "alg_temp"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DreamGenerationConfig(**kwargs)


# ---------------------------------------------------------------------------------------------- sample_tokens


LOGITS = torch.tensor(
    [[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0], [5.0, 4.9, -3.0, 0.0], [-1.0, 3.0, 2.5, 0.5]]
)


def _probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.double(), dim=-1)


def test_confidence_formulas_at_temperature_zero():
    p = _probs(LOGITS)
    conf, tokens = dream_sample_tokens(LOGITS, alg="maskgit_plus")
    assert tokens.tolist() == [0, 0, 0, 1]
    assert torch.allclose(conf.double(), p.max(dim=-1).values, atol=1e-6)
    conf, _ = dream_sample_tokens(LOGITS, alg="topk_margin")
    top = p.sort(dim=-1, descending=True).values
    assert torch.allclose(conf.double(), top[:, 0] - top[:, 1], atol=1e-6)
    assert conf[1] == 0  # a uniform row has no margin
    conf, _ = dream_sample_tokens(LOGITS, alg="entropy")
    neg_entropy = (p * torch.log(p + 1e-10)).sum(dim=-1)
    assert torch.allclose(conf.double(), neg_entropy, atol=1e-6)
    assert conf[1] == pytest.approx(-math.log(4), abs=1e-6)  # uniform row: the least certain
    assert conf.argmin() == 1


def test_top_k_and_top_p_renormalize_before_scoring():
    conf, _ = dream_sample_tokens(LOGITS[:1], top_k=2, alg="maskgit_plus")
    assert conf.item() == pytest.approx(1 / (1 + math.exp(-1.0)), abs=1e-6)
    # softmax([2, 1, 0, -1]) = [0.644, 0.237, 0.087, 0.032]: top_p 0.5 keeps only the first token ...
    conf, _ = dream_sample_tokens(LOGITS[:1], top_p=0.5, alg="maskgit_plus")
    assert conf.item() == pytest.approx(1.0, abs=1e-6)
    conf, _ = dream_sample_tokens(LOGITS[:1], top_p=0.5, alg="entropy")
    assert conf.item() == pytest.approx(0.0, abs=1e-6)
    # ... top_p 0.7 keeps the first two (the mass before the second token, 0.644, is below 0.7).
    conf, _ = dream_sample_tokens(LOGITS[:1], top_p=0.7, alg="topk_margin")
    q = 1 / (1 + math.exp(-1.0))
    assert conf.item() == pytest.approx(q - (1 - q), abs=1e-6)
    # top_p = 1 is a no-op.
    assert torch.equal(dream_sample_tokens(LOGITS, top_p=1.0)[0], dream_sample_tokens(LOGITS)[0])


def test_temperature_scales_then_samples_and_scores_the_sample():
    temperature = 2.0
    g = torch.Generator().manual_seed(0)
    conf, tokens = dream_sample_tokens(LOGITS, temperature=temperature, alg="maskgit_plus", generator=g)
    p = _probs(LOGITS / temperature)
    assert torch.allclose(conf.double(), p.gather(1, tokens[:, None]).squeeze(1), atol=1e-6)
    conf, _ = dream_sample_tokens(LOGITS, temperature=temperature, alg="entropy", generator=g)
    assert torch.allclose(conf.double(), (p * torch.log(p + 1e-10)).sum(-1), atol=1e-6)


def test_temperature_sampling_frequencies():
    n = 40000
    logits = LOGITS[3].expand(n, 4)
    _, tokens = dream_sample_tokens(
        logits, temperature=0.8, top_k=3, generator=torch.Generator().manual_seed(2)
    )
    assert not (tokens == 0).any()  # the smallest logit is removed by top_k=3
    kept = LOGITS[3].clone()
    kept[0] = -float("inf")
    p = _probs(kept / 0.8)
    freq = torch.bincount(tokens, minlength=4).double() / n
    assert ((freq - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n) + 1e-12).all()


def test_transfer_count_formula():
    ts = torch.linspace(1, 1e-3, 8)
    for m in [0, 1, 7, 64, 129]:
        for i in range(6):
            expected = int(torch.tensor(float(m)) * (1 - ts[i + 1] / ts[i]))
            got = dream_transfer_count(torch.tensor([m]), ts[i], ts[i + 1], last=False)
            assert got.tolist() == [expected]
        assert dream_transfer_count(torch.tensor([m]), ts[6], ts[7], last=True).tolist() == [m]


# ---------------------------------------------------------------------------------------------- generation


@pytest.mark.parametrize("alg", SCORED)
@pytest.mark.parametrize(("steps", "new_tokens", "alg_temp"), [(5, 12, 0.0), (4, 9, 0.5), (16, 6, 0.0)])
def test_commits_per_step_follow_the_time_schedule(fake_model_cls, alg, steps, new_tokens, alg_temp):
    model = fake_model_cls(arch="dream")
    cfg = DreamGenerationConfig(max_new_tokens=new_tokens, steps=steps, alg=alg, alg_temp=alg_temp)
    prompt = _prompt(model)
    out, states = _run(model, prompt, cfg, generator=torch.Generator().manual_seed(0))
    mask_id = model.mask_token_id
    assert out.shape == (2, 4 + new_tokens)
    assert torch.equal(out[:, :4], prompt)
    assert not (out == mask_id).any()
    ts = torch.linspace(1, cfg.eps, steps + 1)
    remaining = new_tokens
    for i, s in enumerate(states):
        assert (s.step, s.block, s.num_blocks) == (i, 0, 1)
        assert s.input_mask.sum(dim=1).tolist() == [remaining] * 2
        ratio = 1 - ts[i + 1] / ts[i]
        n = remaining if i == steps - 1 else int(torch.tensor(float(remaining)) * ratio)
        assert s.committed.sum(dim=1).tolist() == [n] * 2
        assert torch.equal(s.committed, s.input_mask & ~s.mask)
        assert torch.equal(s.tokens[~s.input_mask], s.model_input[~s.input_mask])
        assert torch.equal(torch.isfinite(s.confidence), s.input_mask)
        remaining -= n
    assert remaining == 0


@pytest.mark.parametrize("alg", SCORED)
def test_greedy_commits_the_most_confident_positions(fake_model_cls, alg):
    model = fake_model_cls(seed=5, arch="dream")
    cfg = DreamGenerationConfig(max_new_tokens=10, steps=4, alg=alg)
    out, states = _run(model, _prompt(model), cfg, with_logits=True)
    out2, _ = _run(fake_model_cls(seed=5, arch="dream"), _prompt(model), cfg)
    assert torch.equal(out, out2)
    for s in states:
        conf, tokens = dream_sample_tokens(s.logits[s.input_mask], alg=alg)
        assert torch.allclose(s.confidence[s.input_mask], conf)
        full = s.tokens.clone()
        full[s.input_mask] = tokens
        assert torch.equal(s.tokens[s.committed], full[s.committed])
        for j in range(2):
            left = s.input_mask[j] & ~s.committed[j]
            if left.any() and s.committed[j].any():
                assert s.confidence[j][s.committed[j]].min() >= s.confidence[j][left].max()


def test_origin_reveals_with_probability_one_minus_s_over_t(fake_model_cls):
    model = fake_model_cls(arch="dream", max_len=512)
    cfg = DreamGenerationConfig(max_new_tokens=400, steps=3, eps=0.25, alg="origin")
    out, states = _run(model, _prompt(model, b=1), cfg, generator=torch.Generator().manual_seed(3))
    assert not (out == model.mask_token_id).any()
    ts = torch.linspace(1, 0.25, 4)
    remaining = 400
    for i, s in enumerate(states[:-1]):
        p = float(1 - ts[i + 1] / ts[i])
        got = int(s.committed.sum())
        assert abs(got - remaining * p) <= 5 * math.sqrt(remaining * p * (1 - p)), (i, got, remaining * p)
        assert torch.isneginf(s.confidence).all()  # origin ranks nothing
        remaining -= got
    assert int(states[-1].committed.sum()) == remaining  # the last step reveals the rest


def test_origin_tokens_are_greedy_at_temperature_zero(fake_model_cls):
    model = fake_model_cls(arch="dream")
    _, states = _run(
        model,
        _prompt(model),
        DreamGenerationConfig(max_new_tokens=8, steps=3, alg="origin"),
        with_logits=True,
    )
    for s in states:
        assert torch.equal(s.tokens[s.committed], s.logits.argmax(-1)[s.committed])


def test_alg_temp_sampling_is_reproducible(fake_model_cls):
    model = fake_model_cls(arch="dream")
    cfg = DreamGenerationConfig(
        max_new_tokens=8, steps=4, alg="entropy", alg_temp=0.3, temperature=0.5, top_p=0.9
    )
    a = generate_dream(model, _prompt(model), config=cfg, generator=torch.Generator().manual_seed(11))
    b = generate_dream(model, _prompt(model), config=cfg, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a, b)


@pytest.mark.parametrize("alg", ["entropy", "maskgit_plus"])
def test_left_padded_batch_matches_rows_alone(fake_model_cls, alg):
    model = fake_model_cls(seed=6, arch="dream")
    long_row, short_row = torch.tensor([[3, 7, 1, 9, 4]]), torch.tensor([[5, 8]])
    prompt = torch.cat([long_row, torch.cat([torch.full((1, 3), model.pad_token_id), short_row], dim=1)])
    attn = torch.tensor([[1] * 5, [0, 0, 0, 1, 1]])
    cfg = DreamGenerationConfig(max_new_tokens=9, steps=4, alg=alg)
    states: list[StepState] = []
    batch = generate_dream(model, prompt, attn, cfg, on_step=states.append)
    assert torch.equal(batch[0], generate_dream(model, long_row, None, cfg)[0])
    assert torch.equal(batch[1, 3:], generate_dream(model, short_row, None, cfg)[0])
    assert torch.equal(states[0].attention_mask[:, 5:], torch.ones(2, 9, dtype=attn.dtype))
    assert all(torch.equal(mask, states[0].attention_mask) for _, mask in model.calls[:4])  # batch run


def test_rejects_mask_token_in_prompt(fake_model_cls):
    model = fake_model_cls(arch="dream")
    prompt = _prompt(model)
    prompt[1, 0] = model.mask_token_id
    with pytest.raises(ValueError, match="mask token"):
        generate_dream(model, prompt, config=DreamGenerationConfig(max_new_tokens=4, steps=2))
