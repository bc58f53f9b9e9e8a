"""The block-diffusion sampler (LLaDA2): determinism, KV cache against full recomputation, SGLang's
LowConfidence rule, StepState hooks, the generic ``generate`` dispatch and config validation.
Reference parity of the sampler is in test_llada2_parity.py."""

from __future__ import annotations

import pytest
import torch
from dllm_sampler import BlockDiffusionConfig, StepState, generate, generate_block, transfer_schedule
from dllm_sampler.testing import random_llada2

PROMPT = torch.tensor([[5, 17, 30, 2, 11, 40], [8, 9, 10, 11, 12, 13]])


@pytest.fixture(scope="module")
def dlm():  # type: ignore[no-untyped-def]
    return random_llada2(0)


def _run(dlm, config: BlockDiffusionConfig, seed: int = 0, **kwargs):  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return generate_block(dlm, PROMPT, config=config, generator=gen, **kwargs)


@pytest.mark.parametrize(
    "config",
    [
        BlockDiffusionConfig(gen_length=10, block_length=4, algorithm="low_confidence", threshold=0.1),
        BlockDiffusionConfig(gen_length=10, block_length=4, steps=2, threshold=0.08),
        BlockDiffusionConfig(gen_length=10, block_length=4, steps=4, temperature=0.8, top_k=8),
    ],
)
def test_kv_cache_gives_the_tokens_of_full_recomputation(dlm, config: BlockDiffusionConfig) -> None:  # type: ignore[no-untyped-def]
    cached = _run(dlm, config)
    full = _run(dlm, BlockDiffusionConfig(**{**config.__dict__, "use_cache": False}))
    assert torch.equal(cached, full)
    assert cached.shape == (2, PROMPT.shape[1] + config.gen_length)
    assert torch.equal(cached[:, : PROMPT.shape[1]], PROMPT)
    assert not bool((cached == dlm.mask_token_id).any())


def test_same_seed_same_tokens_other_seed_other_tokens(dlm) -> None:  # type: ignore[no-untyped-def]
    config = BlockDiffusionConfig(gen_length=12, block_length=4, steps=4, temperature=1.0)
    assert torch.equal(_run(dlm, config, seed=3), _run(dlm, config, seed=3))
    assert not torch.equal(_run(dlm, config, seed=3), _run(dlm, config, seed=4))


def test_low_confidence_commits_all_above_threshold_else_the_most_confident(dlm) -> None:  # type: ignore[no-untyped-def]
    states: list[StepState] = []
    config = BlockDiffusionConfig(gen_length=8, block_length=4, algorithm="low_confidence", threshold=0.07)
    _run(dlm, config, on_step=states.append)
    assert states
    for s in states:
        lo = s.block * 4 + 4  # the prompt's first block is cached, generation starts at block 1
        conf = s.confidence[:, lo : lo + 4]
        for row in range(conf.shape[0]):
            committed = s.committed[row, lo : lo + 4]
            above = conf[row] > config.threshold
            if bool(s.input_mask[row, lo : lo + 4].any()):
                expected = above if bool(above.any()) else conf[row] == conf[row].max()
                assert torch.equal(committed, expected)


def test_step_states_describe_the_window_the_model_saw(dlm) -> None:  # type: ignore[no-untyped-def]
    states: list[StepState] = []
    config = BlockDiffusionConfig(gen_length=10, block_length=4, steps=4)
    out = _run(dlm, config, on_step=states.append, with_logits=True)
    assert [s.step for s in states] == list(range(len(states)))
    for s in states:
        hi = (s.block + 2) * 4
        assert s.model_input.shape == s.tokens.shape == (2, hi)
        assert s.prompt_length == PROMPT.shape[1]
        assert torch.equal(s.committed, s.input_mask & ~s.mask)
        assert s.logits is not None and s.logits.shape == (2, hi, dlm.vocab_size)
        assert bool(s.committed.any())
    assert torch.equal(states[-1].tokens, out[:, : states[-1].tokens.shape[1]])


def test_generate_dispatches_on_the_config_and_defaults_to_the_arch_sampler(dlm) -> None:  # type: ignore[no-untyped-def]
    config = BlockDiffusionConfig(gen_length=6, block_length=4, steps=4)
    with torch.no_grad():
        assert torch.equal(generate(dlm, PROMPT, config=config), _run(dlm, config))
    assert dlm.spec.default_generation() == BlockDiffusionConfig()


def test_transfer_schedule_spreads_the_remainder_first() -> None:
    assert transfer_schedule(32, 32) == [1] * 32
    assert transfer_schedule(10, 4) == [3, 3, 2, 2]
    assert sum(transfer_schedule(32, 5)) == 32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block_length": 0}, "block_length must be a positive int"),
        ({"threshold": 1.5}, "threshold must lie in"),
        ({"algorithm": "greedy"}, "algorithm must be"),
        ({"top_p": 0.0}, "top_p must lie in"),
    ],
)
def test_bad_settings_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BlockDiffusionConfig(**kwargs)


def test_other_architectures_are_refused_with_the_fix() -> None:
    from dllm_sampler.testing import random_char_model

    with pytest.raises(TypeError, match="use the model's own sampler"):
        generate_block(random_char_model("llada"), PROMPT, config=BlockDiffusionConfig(gen_length=4))


@pytest.mark.parametrize(
    ("gen_length", "steps", "per_block"), [(35, 35, 32), (64, 16, 8), (35, 1, 1), (8, 64, 32)]
)
def test_with_length_keeps_the_block_and_scales_the_steps(gen_length, steps, per_block):
    config = BlockDiffusionConfig(threshold=0.9).with_length(gen_length, steps)
    assert (config.gen_length, config.block_length, config.steps) == (gen_length, 32, per_block)
    assert config.threshold == 0.9
