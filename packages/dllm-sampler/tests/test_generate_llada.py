"""LLaDA sampler: schedule, semi-autoregressive blocks, greedy/Gumbel sampling, CFG, padding, hooks."""

from __future__ import annotations

import itertools

import pytest
import torch
from dllm_sampler import (
    LLaDAGenerationConfig,
    StepState,
    add_gumbel_noise,
    generate_llada,
    linear_transfer_schedule,
)


def _prompt(model, b: int = 2, lp: int = 5, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.vocab_size - 4, (b, lp), generator=g)


def _run(model, prompt, cfg, attention_mask=None, **kw) -> tuple[torch.Tensor, list[StepState]]:
    states: list[StepState] = []
    out = generate_llada(model, prompt, attention_mask, cfg, on_step=states.append, **kw)
    return out, states


def _expected_schedule(n: int, steps: int) -> list[int]:
    return [n // steps + (1 if i < n % steps else 0) for i in range(steps)]


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gen_length": 10, "block_length": 4}, "multiple of block_length"),
        ({"steps": 6, "gen_length": 8, "block_length": 2}, "multiple of the number of blocks"),
        ({"steps": 0}, "steps must be a positive int"),
        ({"temperature": -0.1}, "temperature"),
        ({"cfg_scale": -1.0}, "cfg_scale"),
        ({"remasking": "top_k"}, "remasking"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LLaDAGenerationConfig(**kwargs)


def test_config_derived_sizes():
    cfg = LLaDAGenerationConfig(steps=12, gen_length=16, block_length=4)
    assert (cfg.num_blocks, cfg.steps_per_block) == (4, 3)


def test_linear_schedule_matches_formula_and_sums():
    for n in range(0, 20):
        for steps in range(1, 9):
            got = linear_transfer_schedule(torch.tensor([n, n + 3]), steps)
            assert got[0].tolist() == _expected_schedule(n, steps)
            assert got[1].tolist() == _expected_schedule(n + 3, steps)
            assert int(got[0].sum()) == n


# ---------------------------------------------------------------------------------------------- schedule


CASES = [(8, 8, 8), (6, 12, 4), (4, 12, 6), (10, 8, 4), (3, 7, 7)]


@pytest.mark.parametrize(("steps", "gen_length", "block_length"), CASES)
@pytest.mark.parametrize(
    ("remasking", "temperature"), [("low_confidence", 0.0), ("random", 0.0), ("low_confidence", 1.0)]
)
def test_schedule_blocks_and_commit_invariants(
    fake_model, steps, gen_length, block_length, remasking, temperature
):
    cfg = LLaDAGenerationConfig(
        steps=steps,
        gen_length=gen_length,
        block_length=block_length,
        remasking=remasking,
        temperature=temperature,
    )
    prompt = _prompt(fake_model)
    lp = prompt.shape[1]
    out, states = _run(fake_model, prompt, cfg, generator=torch.Generator().manual_seed(0))
    mask_id = fake_model.mask_token_id

    assert out.shape == (2, lp + gen_length)
    assert torch.equal(out[:, :lp], prompt)
    assert not (out == mask_id).any()
    assert [s.step for s in states] == list(range(steps))
    spb = steps // (gen_length // block_length)
    expected = _expected_schedule(block_length, spb)
    for s in states:
        start = lp + s.block * block_length
        end = start + block_length
        i = s.step - s.block * spb
        assert s.block == s.step // spb
        # Linear schedule: the i-th step of a block commits expected[i] tokens in every row.
        assert s.committed.sum(dim=1).tolist() == [expected[i]] * 2
        # Semi-AR: commits only inside the current block; earlier blocks are finished, later ones untouched.
        cols = torch.arange(out.shape[1])
        assert not s.committed[:, (cols < start) | (cols >= end)].any()
        assert not s.input_mask[:, lp:start].any()
        assert s.input_mask[:, end:].all()
        # Hook state is consistent.
        assert torch.equal(s.input_mask, s.model_input == mask_id)
        assert torch.equal(s.mask, s.tokens == mask_id)
        assert torch.equal(s.committed, s.input_mask & ~s.mask)
        assert torch.equal(s.tokens[~s.input_mask], s.model_input[~s.input_mask])
        assert torch.isinf(s.confidence[:, end:]).all() and torch.isinf(s.confidence[~s.input_mask]).all()
        assert torch.isfinite(s.confidence[s.committed]).all()
        assert torch.equal(torch.isfinite(s.token_confidence), s.input_mask)
    # Committed tokens never change afterwards.
    for earlier, later in itertools.pairwise(states):
        assert torch.equal(later.model_input, earlier.tokens)
    for s in states:
        assert torch.equal(out[~s.mask], s.tokens[~s.mask])


def test_response_mask_ratio_goes_from_one_down(fake_model):
    cfg = LLaDAGenerationConfig(steps=4, gen_length=8, block_length=8)
    _, states = _run(fake_model, _prompt(fake_model), cfg)
    ratios = [s.response_mask_ratio().tolist() for s in states]
    assert ratios == [[1.0, 1.0], [0.75, 0.75], [0.5, 0.5], [0.25, 0.25]]


# ---------------------------------------------------------------------------------------------- greedy


def test_temperature_zero_is_deterministic_greedy_low_confidence(fake_model_cls):
    model = fake_model_cls(seed=3)
    cfg = LLaDAGenerationConfig(steps=6, gen_length=12, block_length=4)
    prompt = _prompt(model)
    out, states = _run(model, prompt, cfg, with_logits=True)
    out2, _ = _run(fake_model_cls(seed=3), prompt, cfg, generator=torch.Generator().manual_seed(123))
    assert torch.equal(out, out2)

    reference = fake_model_cls(seed=3)
    lp = prompt.shape[1]
    for s in states:
        # The logits are the model's on the step's input.
        assert torch.allclose(s.logits, reference.logits(s.model_input))
        probs = torch.softmax(s.logits.double(), dim=-1)
        p_max, argmax = probs.max(dim=-1)
        # Committed tokens are the argmax, with confidence = their probability ...
        assert torch.equal(s.tokens[s.committed], argmax[s.committed])
        assert torch.allclose(s.confidence[s.committed].double(), p_max[s.committed], atol=1e-6)
        assert torch.allclose(s.token_confidence[s.input_mask].double(), p_max[s.input_mask], atol=1e-6)
        # ... and the most confident candidates of the current block.
        block = torch.zeros_like(s.mask)
        block[:, lp + s.block * 4 : lp + (s.block + 1) * 4] = True
        for j in range(2):
            left = (s.input_mask & block & ~s.committed)[j]
            if left.any():
                assert p_max[j][s.committed[j]].min() >= p_max[j][left].max()


def test_gumbel_noise_is_float64_and_matches_formula():
    logits = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0))
    got = add_gumbel_noise(logits, 0.7, torch.Generator().manual_seed(5))
    assert got.dtype == torch.float64
    u = torch.rand(3, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(got, logits.double().exp() / (-torch.log(u)) ** 0.7, rtol=1e-12)
    assert add_gumbel_noise(logits, 0.0) is logits


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_gumbel_argmax_samples_softmax_over_temperature(temperature):
    logits = torch.tensor([1.0, 0.2, -0.5, 0.9])
    n = 40000
    draws = add_gumbel_noise(logits.expand(n, 4), temperature, torch.Generator().manual_seed(1)).argmax(-1)
    freq = torch.bincount(draws, minlength=4).double() / n
    p = torch.softmax(logits.double() / temperature, dim=-1)
    tol = 5 * torch.sqrt(p * (1 - p) / n)
    assert ((freq - p).abs() <= tol).all(), (freq, p)


def test_temperature_sampling_is_reproducible_with_generator(fake_model):
    cfg = LLaDAGenerationConfig(steps=4, gen_length=8, block_length=4, temperature=1.0)
    prompt = _prompt(fake_model)
    a = generate_llada(fake_model, prompt, config=cfg, generator=torch.Generator().manual_seed(7))
    b = generate_llada(fake_model, prompt, config=cfg, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- CFG


def test_cfg_zero_makes_one_plain_call_per_step(fake_model):
    cfg = LLaDAGenerationConfig(steps=4, gen_length=8, block_length=8, cfg_scale=0.0)
    prompt = _prompt(fake_model)
    generate_llada(fake_model, prompt, config=cfg)
    assert len(fake_model.calls) == 4
    assert all(ids.shape == (2, 13) for ids, _ in fake_model.calls)


def test_cfg_batches_conditional_and_prompt_masked_inputs(fake_model_cls):
    model = fake_model_cls(seed=2)
    scale = 1.5
    cfg = LLaDAGenerationConfig(steps=4, gen_length=8, block_length=4, cfg_scale=scale)
    prompt = _prompt(model)
    lp = prompt.shape[1]
    out, states = _run(model, prompt, cfg, with_logits=True)
    plain = generate_llada(fake_model_cls(seed=2), prompt, config=LLaDAGenerationConfig(4, 8, 4))
    assert len(model.calls) == 4
    reference = fake_model_cls(seed=2)
    for (ids, _), s in zip(model.calls, states, strict=True):
        cond_x, un_x = ids.chunk(2)
        assert torch.equal(cond_x, s.model_input)
        assert (un_x[:, :lp] == model.mask_token_id).all()
        assert torch.equal(un_x[:, lp:], cond_x[:, lp:])
        cond, un = reference.logits(cond_x), reference.logits(un_x)
        assert torch.allclose(s.logits, un + (scale + 1) * (cond - un), atol=1e-5)
    assert not torch.equal(out, plain)  # guidance changes the fake model's choices


# ---------------------------------------------------------------------------------------------- padding


@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_left_padded_batch_matches_rows_alone(fake_model_cls, cfg_scale):
    model = fake_model_cls(seed=4)
    long_row = torch.tensor([[3, 7, 1, 9, 4, 2]])
    short_row = torch.tensor([[5, 8, 6]])
    pad = model.pad_token_id
    prompt = torch.cat([long_row, torch.cat([torch.full((1, 3), pad), short_row], dim=1)])
    attn = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1]])
    cfg = LLaDAGenerationConfig(steps=6, gen_length=12, block_length=4, cfg_scale=cfg_scale)

    states: list[StepState] = []
    batch = generate_llada(model, prompt, attn, cfg, on_step=states.append)
    alone_long = generate_llada(model, long_row, None, cfg)
    alone_short = generate_llada(model, short_row, None, cfg)
    assert torch.equal(batch[0], alone_long[0])
    assert torch.equal(batch[1, 3:], alone_short[0])
    # The attention mask covers the generated part with ones.
    assert torch.equal(
        states[0].attention_mask, torch.cat([attn, torch.ones(2, 12, dtype=attn.dtype)], dim=1)
    )


# ---------------------------------------------------------------------------------------------- EOS options


class _EosHeavy:
    """Wraps a fake model and makes EOS/EoT the argmax at every third / fifth position."""

    def __init__(self, inner, eot: int):
        self.inner, self.eot = inner, eot
        self.mask_token_id, self.eos_token_id, self.pad_token_id = (
            inner.mask_token_id,
            inner.eos_token_id,
            None,
        )
        self.arch = "llada"

    def logits(self, input_ids, attention_mask=None):
        logits = self.inner.logits(input_ids, attention_mask)
        logits[:, ::3, self.eos_token_id] += 50.0
        logits[:, 1::5, self.eot] += 50.0
        return logits


def test_logits_eos_inf_forbids_eos(fake_model):
    model = _EosHeavy(fake_model, fake_model.eot_token_id)
    prompt = _prompt(fake_model)
    cfg = LLaDAGenerationConfig(steps=4, gen_length=8, block_length=8)
    assert (generate_llada(model, prompt, config=cfg)[:, 5:] == model.eos_token_id).any()
    out, states = _run(model, prompt, LLaDAGenerationConfig(4, 8, 8, logits_eos_inf=True), with_logits=True)
    assert not (out[:, 5:] == model.eos_token_id).any()
    assert all(torch.isneginf(s.logits[..., model.eos_token_id]).all() for s in states)


@pytest.mark.parametrize("block_length", [16, 4])
def test_confidence_eos_eot_inf_ranks_eos_and_eot_last(fake_model, block_length):
    eot = fake_model.eot_token_id
    model = _EosHeavy(fake_model, eot)
    cfg = LLaDAGenerationConfig(
        steps=8, gen_length=16, block_length=block_length, confidence_eos_eot_inf=True, eot_token_id=eot
    )
    out, states = _run(model, _prompt(fake_model), cfg)
    assert not (out == model.mask_token_id).any()
    spb = 8 // (16 // block_length)
    expected = _expected_schedule(block_length, spb)
    assert [s.committed.sum(dim=1).tolist() for s in states] == [[expected[s.step % spb]] * 2 for s in states]
    saw_banned = False
    for s in states:
        banned = s.committed & ((s.tokens == model.eos_token_id) | (s.tokens == eot))
        assert torch.isneginf(s.confidence[banned]).all()
        for j in range(2):
            if banned[j].any():
                saw_banned = True
                # Only when every remaining candidate is banned too.
                left = s.input_mask[j] & ~s.committed[j]
                assert torch.isneginf(s.confidence[j][left]).all()
    assert saw_banned


# ---------------------------------------------------------------------------------------------- inputs


def test_rejects_mask_token_in_prompt_and_bad_attention_mask(fake_model):
    prompt = _prompt(fake_model)
    bad = prompt.clone()
    bad[0, 1] = fake_model.mask_token_id
    with pytest.raises(ValueError, match="mask token"):
        generate_llada(fake_model, bad, config=LLaDAGenerationConfig(2, 4, 4))
    with pytest.raises(ValueError, match="attention_mask shape"):
        generate_llada(fake_model, prompt, torch.ones(2, 3), LLaDAGenerationConfig(2, 4, 4))
    with pytest.raises(ValueError, match=r"\[B, Lp\]"):
        generate_llada(fake_model, prompt[0], config=LLaDAGenerationConfig(2, 4, 4))


def test_progress_bar_runs(fake_model):
    out = generate_llada(
        fake_model, _prompt(fake_model), config=LLaDAGenerationConfig(2, 4, 2), progress=True
    )
    assert out.shape == (2, 9)
