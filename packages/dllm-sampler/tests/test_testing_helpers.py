"""`dllm_sampler.testing`: the character tokenizer round-trips text and the random models run."""

from __future__ import annotations

import pytest
import torch
from dllm_sampler import DreamGenerationConfig
from dllm_sampler.testing import (
    CHAR_VOCAB,
    DECISIVE_MARGIN,
    char_tokenizer,
    decision_margin,
    random_char_model,
    sharp_char_model,
)
from hypothesis import given
from hypothesis import strategies as st

PRINTABLE = st.text(st.characters(min_codepoint=32, max_codepoint=126) | st.just("\n"), max_size=40)


@given(text=PRINTABLE)
def test_char_tokenizer_round_trips_one_token_per_character(text: str) -> None:
    tokenizer = char_tokenizer()
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert len(ids) == len(text) and all(5 <= i < CHAR_VOCAB for i in ids)
    assert tokenizer.decode(ids) == text


def test_char_tokenizer_special_ids() -> None:
    tokenizer = char_tokenizer()
    specials = ["<|pad|>", "<|bos|>", "<|eos|>", "<|mdm_mask|>", "<unk>"]
    assert [tokenizer.token_to_id(t) for t in specials] == [0, 1, 2, 3, 4]
    assert tokenizer.get_vocab_size() == CHAR_VOCAB


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_random_char_model_is_seeded_and_runs(arch: str) -> None:
    a, b, c = random_char_model(arch), random_char_model(arch), random_char_model(arch, seed=1)
    assert (a.arch, a.mask_token_id, a.vocab_size) == (arch, 3, CHAR_VOCAB)
    ids = torch.tensor([a.encode("12+3=", add_special_tokens=False)])
    logits = a.logits(ids)
    assert logits.shape == (1, ids.shape[1], CHAR_VOCAB)
    assert torch.equal(logits, b.logits(ids)) and not torch.equal(logits, c.logits(ids))


def test_sharp_char_model_scales_weights_but_not_norm_gains() -> None:
    flat, sharp = random_char_model("dream", seed=3).model.state_dict(), sharp_char_model("dream", 3, 5.0)
    for name, tensor in sharp.model.state_dict().items():
        expected = flat[name] if name.endswith("norm.weight") else 5.0 * flat[name]
        assert torch.equal(tensor, expected), name


def test_decision_margin_tells_a_near_tie_from_a_decisive_run() -> None:
    """Greedy entropy decoding: the flat default model ranks positions by rounding, the sharp one does not."""
    prompt = torch.tensor([[40, 73, 77, 80, 15, 26], [55, 86, 70, 73, 18, 29]])
    config = DreamGenerationConfig(max_new_tokens=16, steps=8)
    margins = [
        decision_margin(dlm.to(torch.float64), prompt, None, config, torch.Generator().manual_seed(0))[1]
        for dlm in (random_char_model("dream"), sharp_char_model("dream", 6, 12.0))
    ]
    assert margins[0] < 1e-5 and margins[1] > DECISIVE_MARGIN
