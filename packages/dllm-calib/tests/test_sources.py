"""Text sources: file formats, the repository generators, and errors on bad input."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from dllm_calib import (
    ArithmeticSource,
    JsonlSource,
    ListSource,
    StdlibCodeSource,
    TextFileSource,
    text_source,
)
from dllm_sampler import tasks


def test_txt_splits(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("first line\nsecond line\n\n\nthird\n")
    assert list(TextFileSource(path).texts()) == ["first line\nsecond line", "third"]
    assert list(TextFileSource(path, split="line").texts()) == ["first line", "second line", "third"]
    assert list(TextFileSource(path, split="file").texts()) == [path.read_text()]
    assert isinstance(text_source(path), TextFileSource)


def test_jsonl_field(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"prompt": "p1", "text": "t1"}) + "\n\n" + json.dumps({"prompt": "p2"}) + "\n")
    assert list(JsonlSource(path, field="prompt").texts()) == ["p1", "p2"]
    with pytest.raises(ValueError, match=r"a.jsonl:3 has no field 'text'"):
        list(JsonlSource(path).texts())
    src = text_source(path, field="prompt")
    assert isinstance(src, JsonlSource) and src.describe()["field"] == "prompt"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("{bad\n", "not valid JSON"),
        (json.dumps({"text": " "}) + "\n", "is empty"),
    ],
)
def test_jsonl_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        list(JsonlSource(path).texts())


def test_empty_inputs_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        list(TextFileSource(tmp_path / "e.txt").texts())
    with pytest.raises(ValueError, match="text #1 is empty"):
        ListSource(["ok", ""])
    with pytest.raises(ValueError, match="no texts"):
        ListSource([])
    with pytest.raises(TypeError, match="single string"):
        ListSource("abc")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        TextFileSource(tmp_path / "missing.txt")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"unknown calibration corpus format '\.csv'"):
        text_source(tmp_path / "data.csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        text_source(tmp_path / "missing.jsonl")


def test_arithmetic_source_is_seeded_training_prompts() -> None:
    first = list(itertools.islice(ArithmeticSource(seed=3).texts(), 20))
    assert first == list(itertools.islice(ArithmeticSource(seed=3).texts(), 20))
    assert first != list(itertools.islice(ArithmeticSource(seed=4).texts(), 20))
    problems = list(itertools.islice(tasks.train_split(3, (2, 3)), 20))
    assert first == [tasks.format_prompt(p) for p in problems]
    heldout = {tasks.format_prompt(p) for p in tasks.heldout_problems(200)}
    assert not heldout & set(first)
    with_answers = next(ArithmeticSource(seed=3, with_answers=True).texts())
    assert with_answers == first[0] + tasks.format_answer(problems[0])


def test_code_source_excludes_evaluation_modules() -> None:
    texts = list(StdlibCodeSource().texts())
    heldout = {text for _, text in tasks.code_texts("heldout")}
    assert texts and not heldout & set(texts)
    assert isinstance(text_source("code"), StdlibCodeSource)
    assert isinstance(text_source("arithmetic"), ArithmeticSource)
