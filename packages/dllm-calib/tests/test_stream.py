"""Reading a corpus into tokens and cutting windows: no overlap when the corpus suffices, a warning
stating the reuse when it does not, a seeded sample of a corpus larger than the read cap."""

from __future__ import annotations

import warnings

import pytest
import torch
from dllm_calib import ArithmeticSource, ListSource, PlainConfig
from dllm_calib.corpora import CORPORA, CorpusSource
from dllm_calib.stream import CalibrationOverlapWarning, draw_windows, token_stream
from hypothesis import given
from hypothesis import strategies as st


def _starts(windows: torch.Tensor) -> list[int]:
    """Start offsets of windows cut from ``arange(T)``, checking each is a contiguous slice."""
    seq_len = windows.shape[1]
    for row in windows:
        assert torch.equal(row, torch.arange(int(row[0]), int(row[0]) + seq_len))
    return [int(row[0]) for row in windows]


@given(
    num_samples=st.integers(1, 40),
    seq_len=st.integers(2, 64),
    spare=st.integers(0, 600),
    seed=st.integers(0, 2**31),
)
def test_windows_of_a_large_enough_stream_never_overlap(num_samples, seq_len, spare, seed) -> None:
    total = num_samples * seq_len + spare
    g = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationOverlapWarning)
        windows, info = draw_windows(list(range(total)), num_samples, seq_len, g)
    assert windows.shape == (num_samples, seq_len) and windows.dtype == torch.int64
    starts = _starts(windows)
    assert len(set(windows.flatten().tolist())) == num_samples * seq_len  # no token in two windows
    assert min(starts) >= 0 and max(starts) + seq_len <= total
    assert info == {"tokens_needed": num_samples * seq_len, "tokens_available": total, "reused_fraction": 0.0}


def test_window_placement_is_seeded_and_uses_the_spare_tokens() -> None:
    tokens = list(range(5000))
    a, _ = draw_windows(tokens, 8, 16, torch.Generator().manual_seed(1))
    b, _ = draw_windows(tokens, 8, 16, torch.Generator().manual_seed(1))
    c, _ = draw_windows(tokens, 8, 16, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert max(_starts(a)) > 8 * 16  # spread over the stream, not packed at its start


@pytest.mark.parametrize(("total", "num_samples", "seq_len"), [(100, 4, 40), (30, 7, 10), (64, 128, 16)])
def test_overlap_warning_states_the_amount(total, num_samples, seq_len) -> None:
    needed = num_samples * seq_len
    reused = 1 - total / needed
    with pytest.warns(CalibrationOverlapWarning) as record:
        windows, info = draw_windows(list(range(total)), num_samples, seq_len, torch.Generator())
    message = str(record[0].message)
    assert f"gave {total} tokens" in message and f"need {needed}" in message and f"{reused:.1%}" in message
    assert info["reused_fraction"] == pytest.approx(reused, abs=1e-6)
    _starts(windows)
    assert set(windows.flatten().tolist()) == set(range(total))  # every token used: the least reuse


def test_stream_shorter_than_one_window_is_an_error() -> None:
    with pytest.raises(ValueError, match="only 5 tokens but seq_len is 8"):
        draw_windows(list(range(5)), 2, 8, torch.Generator())


def test_builder_reads_the_whole_small_corpus_and_does_not_overlap(char_model) -> None:
    texts = [f"document {i}: " + "lorem ipsum dolor sit amet " * 3 for i in range(40)]
    cset = PlainConfig(num_samples=10, seq_len=50, seed=3).build(char_model, ListSource(texts))
    source = cset.provenance.source
    assert source["texts_read"] == source["corpus_texts"] == 40 and not source["sampled"]
    assert source["tokens_available"] == sum(len(t) for t in texts) + 39  # EOS between texts
    assert source["reused_fraction"] == 0.0 and source["tokens_needed"] == 500


def test_builder_warns_when_the_corpus_is_small(char_model) -> None:
    with pytest.warns(CalibrationOverlapWarning, match="windows overlap"):
        cset = PlainConfig(num_samples=10, seq_len=50, seed=3).build(char_model, ListSource(["x" * 120]))
    assert cset.provenance.source["reused_fraction"] == pytest.approx(1 - 120 / 500)


def test_separator_joins_texts_like_the_reference_loaders(char_model) -> None:
    texts = [" = Title = \n", " a line of the article \n", " another \n"]
    source = CorpusSource(ListSource(texts), CORPORA["wikitext2"])
    tokens, info = token_stream(char_model, source, 10)
    assert tokens == char_model.encode("\n\n".join(texts)) and info["texts_read"] == 3
    plain, _ = token_stream(char_model, ListSource(texts), 10)
    assert plain.count(char_model.eos_token_id) == 2


def test_a_corpus_above_the_read_cap_is_read_as_a_seeded_sample(char_model) -> None:
    texts = [f"{i:04d} " + "abcdefghij" * 4 for i in range(1000)]  # 45 characters (tokens) each
    corpus = ListSource(texts)
    tokens, info = token_stream(char_model, CorpusSource(corpus, None, max_read_tokens=2000), 500, seed=0)
    assert info["sampled"] and info["corpus_texts"] == 1000 and info["max_read_tokens"] == 2000
    assert 2000 <= info["tokens_read"] <= 2000 + 2 * 46 and info["texts_read"] < 100
    again, _ = token_stream(char_model, CorpusSource(corpus, None, max_read_tokens=2000), 500, seed=0)
    other, _ = token_stream(char_model, CorpusSource(corpus, None, max_read_tokens=2000), 500, seed=1)
    assert again == tokens and other != tokens
    prefix, _ = token_stream(char_model, ListSource(texts[: info["texts_read"]]), 500)
    assert prefix != tokens  # a sample, not simply the first texts
    whole, info = token_stream(char_model, corpus, 3000)  # default cap: 16 x 3000 tokens > the corpus
    assert not info["sampled"] and info["texts_read"] == 1000 and len(whole) == 1000 * 45 + 999


def test_an_endless_source_is_read_only_as_far_as_needed(char_model) -> None:
    tokens, info = token_stream(char_model, ArithmeticSource(), 300)
    assert 300 <= len(tokens) < 400 and "corpus_texts" not in info


def test_read_cap_below_the_need_is_an_error(char_model) -> None:
    with pytest.raises(ValueError, match="max_read_tokens 10 is below the 100 tokens"):
        token_stream(char_model, CorpusSource(ListSource(["abc"]), None, max_read_tokens=10), 100)
