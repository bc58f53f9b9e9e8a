"""`generate` dispatch and the shared per-step helpers."""

from __future__ import annotations

import importlib

import pytest
import torch
from dllm_sampler import (
    DiffusionLM,
    DreamGenerationConfig,
    LLaDAGenerationConfig,
    default_generation_config,
    generate,
    generate_dream,
    generate_llada,
    tiny_config,
)
from dllm_sampler.step import sample_without_replacement, select_top_k


def _prompt() -> torch.Tensor:
    return torch.tensor([[1, 2, 3], [4, 5, 6]])


def test_dispatch_on_config_type(fake_model):
    llada = LLaDAGenerationConfig(steps=4, gen_length=8, block_length=4)
    dream = DreamGenerationConfig(max_new_tokens=6, steps=3)
    assert torch.equal(
        generate(fake_model, _prompt(), config=llada), generate_llada(fake_model, _prompt(), None, llada)
    )
    assert torch.equal(
        generate(fake_model, _prompt(), config=dream), generate_dream(fake_model, _prompt(), None, dream)
    )


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_dispatch_on_arch_without_config(fake_model_cls, monkeypatch, arch):
    seen = []
    for name in ("generate_llada", "generate_dream"):
        module = importlib.import_module(f"dllm_sampler.{name}")  # the name is shadowed by the function
        monkeypatch.setattr(module, name, lambda m, p, a, config, **kw: seen.append(config) or p)
    generate(fake_model_cls(arch=arch), _prompt())
    expected = LLaDAGenerationConfig() if arch == "llada" else DreamGenerationConfig()
    assert seen == [expected] and default_generation_config(arch) == expected


def test_dispatch_errors(fake_model_cls):
    with pytest.raises(ValueError, match="unknown model arch 'gpt'; known archs: 'llada', 'dream'"):
        generate(fake_model_cls(arch="gpt"), _prompt())
    with pytest.raises(TypeError, match="LLaDAGenerationConfig or DreamGenerationConfig"):
        generate(fake_model_cls(), _prompt(), config={"steps": 4})


def test_select_top_k_only_picks_candidates_even_at_minus_inf():
    conf = torch.tensor([[0.9, float("-inf"), 0.1, float("-inf"), 0.5], [0.2, 0.3, 0.4, 0.5, 0.6]])
    cand = torch.tensor([[False, True, True, True, False], [True, True, True, True, True]])
    got = select_top_k(conf, cand, torch.tensor([2, 3]))
    assert got[0].tolist() == [False, False, True, True, False] or got[0].tolist() == [
        False,
        True,
        True,
        False,
        False,
    ]
    assert got[1].tolist() == [False, False, True, True, True]
    with pytest.raises(RuntimeError, match="only 3 are masked"):
        select_top_k(conf, cand, torch.tensor([4, 0]))


def test_sample_without_replacement_counts_and_distribution():
    cand = torch.tensor([[True, False, True, True]])
    scores = torch.tensor([[1.0, 9.0, 0.0, -1.0]])
    g = torch.Generator().manual_seed(0)
    hits = torch.zeros(4)
    n = 4000
    for _ in range(n):
        sel = sample_without_replacement(scores, cand, torch.tensor([1]), 0.5, g)
        assert int(sel.sum()) == 1 and not sel[0, 1]
        hits += sel[0].float()
    p = torch.softmax(torch.tensor([1.0, 0.0, -1.0]) / 0.5, dim=0)
    freq = hits[[0, 2, 3]] / n
    assert ((freq - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n)).all()


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_a_prompt_past_the_models_maximum_fails_before_any_forward(arch: str) -> None:
    dlm = DiffusionLM.from_config(tiny_config(arch), seed=0)
    limit, key = dlm.max_positions, dlm.max_positions_key
    assert (limit, key) == (256, {"llada": "max_sequence_length", "dream": "max_position_embeddings"}[arch])
    config = default_generation_config(arch).with_length(8, 1)
    prompt = torch.full((1, limit - 7), 5)
    forward = dlm.logits

    def no_forward(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("the model ran on an over-long sequence")

    dlm.logits = no_forward  # type: ignore[method-assign]
    expected = (
        rf"the prompt \({limit - 7} tokens\) plus the tokens to generate \(8\) make {limit + 1} positions, "
        rf"more than the model's maximum of {limit} \({key} in its config\)"
    )
    with pytest.raises(ValueError, match=expected):
        generate(dlm, prompt, config=config)
    dlm.logits = forward  # type: ignore[method-assign]
    assert generate(dlm, prompt[:, 1:], config=config).shape == (1, limit)  # exactly the maximum runs
