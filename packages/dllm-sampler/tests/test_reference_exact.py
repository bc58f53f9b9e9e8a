"""The pieces of ``reference_exact`` sampling: RoPE rounding, whole-row top-k, the reference's categorical
draw with its argmax fallback, and the dtype confidences are computed in."""

from __future__ import annotations

import pytest
import torch
from dllm_sampler.generate_dream import DreamGenerationConfig, _reference_categorical, dream_sample_tokens
from dllm_sampler.generate_llada import LLaDAGenerationConfig
from dllm_sampler.rope import model_rope
from dllm_sampler.step import reference_dtype, reference_rounding, row_top_k
from dllm_sampler.testing import random_char_model
from hypothesis import given
from hypothesis import strategies as st

IDS = torch.tensor([[10, 20, 30, 40, 50, 3, 3, 3]])


def _logits(dlm, mode: str) -> torch.Tensor:
    dlm.model.rope_rounding = mode
    with torch.no_grad():
        return dlm.model(IDS)


@pytest.mark.parametrize(
    ("arch", "overrides", "rounds"),
    [("dream", {}, True), ("llada", {}, False), ("llada", {"rope_full_precision": False}, True)],
)
def test_reference_rope_rounds_in_bf16_where_the_reference_does(arch, overrides, rounds):
    dlm = random_char_model(arch, seed=0, **overrides)
    assert torch.equal(_logits(dlm, "float32"), _logits(dlm, "reference"))  # float32: nothing to round
    dlm.to(torch.bfloat16)
    assert torch.equal(_logits(dlm, "float32"), _logits(dlm, "reference")) != rounds


def test_model_rope_follows_the_models_rounding():
    dlm = random_char_model("dream", seed=0).to(torch.bfloat16)
    q = torch.randn(1, 4, 6, 8, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    positions = torch.arange(6)[None]
    rope = model_rope(dlm)
    accurate = rope(q, q, positions)[0]
    with reference_rounding(dlm):
        rounded = rope(q, q, positions)[0]
    assert not torch.equal(accurate, rounded)
    assert torch.equal(rope(q, q, positions)[0], accurate)


def test_reference_rounding_restores_the_model_and_ignores_plain_predictors(fake_model):
    dlm = random_char_model("llada", seed=0)
    with pytest.raises(RuntimeError), reference_rounding(dlm):
        assert dlm.model.rope_rounding == "reference"
        raise RuntimeError
    assert dlm.model.rope_rounding == "float32"
    with reference_rounding(dlm, enabled=False):
        assert dlm.model.rope_rounding == "float32"
    with reference_rounding(fake_model):
        pass


def test_reference_dtype_is_the_models_half_dtype_else_the_logits():
    logits = torch.zeros(1, 2, 3)
    assert reference_dtype(random_char_model("dream", seed=0).to(torch.bfloat16), logits) == torch.bfloat16
    assert reference_dtype(random_char_model("dream", seed=0), logits.double()) == torch.float64
    assert reference_dtype(object(), logits) == torch.float32  # type: ignore[arg-type]


@given(
    st.lists(st.integers(-3, 3), min_size=1, max_size=12).flatmap(
        lambda row: st.tuples(st.just(row), st.integers(0, len(row)))
    )
)
def test_row_top_k_picks_k_positions_holding_the_k_largest_values(row_and_k):
    row, k = row_and_k
    confidence = torch.tensor([row], dtype=torch.float32)
    selected = row_top_k(confidence, torch.tensor([k]))
    assert int(selected.sum()) == k
    picked = sorted(confidence[selected].tolist(), reverse=True)
    assert picked == sorted(row, reverse=True)[:k]


@pytest.mark.parametrize(
    "rows",
    [
        [[0.25, 0.25, 0.5], [1.0, 0.0, 0.0]],
        [[0.25, 0.25, 0.5], [0.0, 0.0, 0.0]],  # normalizes to NaN: Categorical raises
        [[0.5, 0.6, -0.1]],  # a negative entry: Categorical raises
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_categorical_gives_up_exactly_when_torch_distributions_raises(rows, dtype):
    probs = torch.tensor(rows, dtype=dtype)
    try:
        torch.distributions.Categorical(probs=probs)
        raises = False
    except ValueError:
        raises = True
    assert (_reference_categorical(probs, torch.Generator().manual_seed(0)) is None) == raises


def test_sample_tokens_takes_the_argmax_when_the_draw_gives_up():
    logits = torch.tensor([[0.0, 2.0, 1.0], [float("-inf")] * 3])
    conf, tokens = dream_sample_tokens(logits, temperature=1.0, reference_exact=True)
    assert tokens[0].item() == 1 and conf.shape == (2,)


def test_categorical_draws_one_multinomial_of_the_normalized_rows():
    probs = torch.softmax(torch.randn(5, 7, generator=torch.Generator().manual_seed(1)), dim=-1)
    drawn = _reference_categorical(probs, torch.Generator().manual_seed(2))
    normalized = probs / probs.sum(-1, keepdim=True)
    expected = torch.multinomial(normalized, 1, True, generator=torch.Generator().manual_seed(2))
    assert drawn is not None and torch.equal(drawn, expected.squeeze(-1))


def test_configs_default_to_reference_exact_and_keep_it_in_greedy():
    assert LLaDAGenerationConfig().reference_exact and DreamGenerationConfig().reference_exact
    assert not LLaDAGenerationConfig(reference_exact=False).greedy(4).reference_exact
    assert not DreamGenerationConfig(reference_exact=False).greedy(4).reference_exact


def test_dream_conventions_state_their_filters():
    harness, readme = DreamGenerationConfig.harness(), DreamGenerationConfig.readme()
    assert (harness.top_p, harness.top_k, harness.temperature, harness.steps) == (0.95, None, 0.0, 512)
    assert (readme.top_p, readme.top_k, readme.temperature, readme.steps) == (0.95, 50, 0.2, 512)
    assert DreamGenerationConfig.harness(steps=64).steps == 64
