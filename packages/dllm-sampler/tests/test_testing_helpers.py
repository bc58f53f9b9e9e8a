"""`dllm_sampler.testing`: the character tokenizer round-trips text and the random models run."""

from __future__ import annotations

import pytest
import torch
from dllm_sampler.testing import CHAR_VOCAB, char_tokenizer, random_char_model
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
