"""Builders: registry, validation of bad input, determinism, and what the plain windows contain."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dllm_calib import (
    BUILDERS,
    CalibrationSet,
    ListSource,
    MCSConfig,
    PlainConfig,
    RandomConfig,
    TMASConfig,
    build_calibration_set,
    builder_config,
)

TEXTS = ListSource(
    [f"document {i}: lorem ipsum dolor sit amet, consectetur adipiscing elit" for i in range(30)]
)
WINDOW_CONFIGS = [
    PlainConfig(num_samples=6, seq_len=20, seed=5),
    RandomConfig(num_samples=6, seq_len=20, seed=5),
    MCSConfig(num_samples=3, seq_len=20, seed=5, num_timesteps=4),
]


def _same(a: CalibrationSet, b: CalibrationSet) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x.input_ids, y.input_ids) and torch.equal(x.is_masked, y.is_masked) and x.t == y.t
        for x, y in zip(a, b, strict=True)
    )


def test_registry() -> None:
    assert set(BUILDERS) == {"plain", "random", "mcs", "tmas"}
    assert BUILDERS["mcs"] is MCSConfig
    assert builder_config("mcs", gamma=0.5) == MCSConfig(gamma=0.5)
    with pytest.raises(ValueError, match="unknown calibration builder 'foo'"):
        builder_config("foo")
    with pytest.raises(TypeError, match="no parameters \\['gama'\\]"):
        builder_config("mcs", gama=0.5)


@pytest.mark.parametrize("config", WINDOW_CONFIGS, ids=lambda c: c.name)
def test_window_builders_are_deterministic(char_model, config) -> None:
    a = config.build(char_model, TEXTS)
    assert _same(a, build_calibration_set(config.name, char_model, TEXTS, **config.to_dict()))
    other = type(config)(**{**config.to_dict(), "seed": 6})
    assert not _same(a, other.build(char_model, TEXTS))
    assert a.provenance.builder == config.name and a.provenance.seed == 5
    assert a.provenance.params["seq_len"] == 20 and a.provenance.source["kind"] == "list"


def test_plain_windows_are_clean_slices_of_the_token_stream(char_model) -> None:
    cset = PlainConfig(num_samples=8, seq_len=24, seed=1).build(char_model, TEXTS)
    texts = list(TEXTS.texts())[: cset.provenance.source["texts_read"]]
    stream = []
    for i, text in enumerate(texts):
        stream += ([char_model.eos_token_id] if i else []) + char_model.encode(text)
    stream = torch.tensor(stream)
    windows = stream.unfold(0, 24, 1)
    for state in cset:
        assert state.mask_ratio == 0.0 and state.t == 0.0 and not state.is_masked.any()
        assert state.attention_mask.all()
        assert bool((windows == state.input_ids).all(dim=1).any())


@pytest.mark.parametrize(
    "make", [lambda: MCSConfig(gamma=1.0), lambda: MCSConfig(gamma=-0.1), lambda: MCSConfig(gamma=1.5)]
)
def test_gamma_outside_unit_interval_is_rejected(make) -> None:
    with pytest.raises(ValueError, match=r"gamma .* must be in \[0, 1\)"):
        make()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quotas": (0.3, 0.3, 0.2, 0.3)}, "sum to 1"),
        ({"quotas": (0.5, 0.5)}, "one quota per bucket"),
        ({"quotas": (1.2, -0.2, 0.0, 0.0)}, "non-negative"),
        ({"num_samples": 0}, "num_samples must be an int >= 1"),
        ({"on_short": "skip"}, "on_short"),
    ],
)
def test_tmas_config_validation(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        TMASConfig(**kwargs)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PlainConfig(seq_len=1), "seq_len must be an int >= 2"),
        (lambda: RandomConfig(eps=1.0), "eps must be in"),
        (lambda: MCSConfig(num_timesteps=0), "num_timesteps"),
        (lambda: MCSConfig(schedule="exp"), "schedule"),  # type: ignore[arg-type]
        (lambda: MCSConfig(assignment="all"), "assignment"),  # type: ignore[arg-type]
    ],
)
def test_window_config_validation(make, message) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_model_without_mask_token_is_rejected(char_model) -> None:
    no_mask = type(char_model)(mask_token_id=None)
    for config in (RandomConfig(seq_len=8), MCSConfig(seq_len=8), TMASConfig()):
        with pytest.raises(ValueError, match="has no mask_token_id"):
            config.build(no_mask, TEXTS)
    assert PlainConfig(num_samples=2, seq_len=8).build(no_mask, TEXTS).mask_token_id is None


def test_empty_or_short_text_is_rejected(char_model, tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        MCSConfig(seq_len=8).build(char_model, tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="only 5 tokens but seq_len is 64"):
        PlainConfig(seq_len=64).build(char_model, ListSource(["short"]))


def test_text_holding_the_mask_token_is_rejected(char_model) -> None:
    class MaskingTokenizer(type(char_model)):
        def encode(self, text: str) -> list[int]:
            return [self.mask_token_id if c == "#" else 10 for c in text]

    with pytest.raises(ValueError, match="encodes to the mask token"):
        MCSConfig(seq_len=4).build(MaskingTokenizer(), ListSource(["abc#defgh"]))
