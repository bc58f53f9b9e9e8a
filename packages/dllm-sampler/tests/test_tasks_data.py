"""Tokenizer, stdlib code corpus and token batches of the tiny-model tasks."""

from __future__ import annotations

import pytest
import torch
from dllm_sampler.tasks.arithmetic import ANSWER_TOKENS, format_answer, format_prompt, heldout_problems
from dllm_sampler.tasks.batching import generation_prompts, sft_batch
from dllm_sampler.tasks.code import HELDOUT_MODULES, chunk_ids, code_modules, code_texts
from dllm_sampler.tasks.tokenizer import BOS, EOS, MASK, PAD, SPECIAL_TOKENS, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer()


def test_tokenizer_training_is_deterministic(tokenizer):
    assert train_tokenizer().to_str() == tokenizer.to_str()
    assert tokenizer.get_vocab_size() == 1024


def test_special_tokens_are_single_distinct_ids(tokenizer):
    ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
    assert ids == [0, 1, 2, 3]
    assert tokenizer.token_to_id(PAD) != tokenizer.token_to_id(MASK)
    assert tokenizer.encode(MASK, add_special_tokens=False).ids == [tokenizer.token_to_id(MASK)]
    assert tokenizer.encode(f"7{MASK}{MASK}x", add_special_tokens=False).ids[1:3] == [3, 3]


def test_digits_are_single_tokens(tokenizer):
    digit_ids = {str(d): tokenizer.token_to_id(str(d)) for d in range(10)}
    assert None not in digit_ids.values()
    for p in heldout_problems(50):
        text = format_prompt(p) + format_answer(p)
        enc = tokenizer.encode(text, add_special_tokens=False)
        digits = [tok for tok in enc.tokens if any(ch.isdigit() for ch in tok)]
        assert all(len(tok) == 1 for tok in digits), digits
        assert "".join(digits) == "".join(ch for ch in text if ch.isdigit())
        assert [i for i in enc.ids if i in digit_ids.values()] == [digit_ids[t] for t in digits]


def test_tokenizer_round_trips_code(tokenizer):
    _, text = code_texts("heldout")[0]
    snippet = text[:2000]
    assert tokenizer.decode(tokenizer.encode(snippet, add_special_tokens=False).ids) == snippet


def test_code_splits_are_disjoint_and_sorted():
    train, heldout = code_modules("train"), code_modules("heldout")
    assert train == sorted(train) and len(train) > 100
    assert heldout == list(HELDOUT_MODULES)
    assert set(train).isdisjoint(heldout)
    assert not any(name.startswith("_") for name in train)
    with pytest.raises(ValueError, match="split"):
        code_modules("test")  # type: ignore[arg-type]


def test_heldout_code_never_in_training_chunks(tokenizer):
    def encode(s):
        return tokenizer.encode(s, add_special_tokens=False).ids

    train = {tuple(c) for c in chunk_ids(encode, "train", 32)}
    heldout = chunk_ids(encode, "heldout", 32)
    assert heldout and all(len(c) == 32 for c in heldout)
    assert not train & {tuple(c) for c in heldout}
    heldout_texts = {text for _, text in code_texts("heldout")}
    assert heldout_texts.isdisjoint(text for _, text in code_texts("train"))
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunk_ids(encode, "train", 0)


def test_sft_batch_layout(tokenizer):
    problems = heldout_problems(8)
    x0, prompt_mask, attention_mask = sft_batch(tokenizer, problems)
    eos, bos, pad = (tokenizer.token_to_id(t) for t in (EOS, BOS, PAD))
    assert x0.shape == prompt_mask.shape == attention_mask.shape
    for row, pm, am, p in zip(x0, prompt_mask, attention_mask, problems, strict=True):
        answer = [*tokenizer.encode(format_answer(p), add_special_tokens=False).ids, eos]
        assert len(answer) == ANSWER_TOKENS + 1
        n_pad = int((am == 0).sum())
        assert (row[:n_pad] == pad).all() and (am[n_pad:] == 1).all() and row[n_pad] == bos
        assert pm[: len(row) - len(answer)].all() and not pm[len(row) - len(answer) :].any()
        assert tokenizer.decode(row[n_pad + 1 : len(row) - len(answer)].tolist()) == format_prompt(p)
        assert row[len(row) - len(answer) :].tolist() == answer


def test_generation_prompts_are_left_padded(tokenizer):
    problems = heldout_problems(6)
    ids, mask = generation_prompts(tokenizer, problems)
    pad, bos = tokenizer.token_to_id(PAD), tokenizer.token_to_id(BOS)
    for row, m, p in zip(ids, mask, problems, strict=True):
        n = int(m.sum())
        assert (row[: len(row) - n] == pad).all() and (m[: len(row) - n] == 0).all()
        assert row[len(row) - n] == bos
        assert tokenizer.decode(row[len(row) - n + 1 :].tolist()) == format_prompt(p)
    assert mask.dtype == torch.long and (mask[:, -1] == 1).all()
    with pytest.raises(ValueError, match="empty"):
        generation_prompts(tokenizer, [])
