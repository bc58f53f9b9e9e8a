"""Where calibration text comes from: the `TextSource` abstraction and its implementations.

A source yields texts (documents or prompts) in a fixed order, so a builder that reads the first ``n`` texts
of a source is deterministic. Sources:

- `ArithmeticSource`, `StdlibCodeSource`: the repository's own generators (``dllm_sampler.tasks``), the
  natural data for the tiny reference models; only their training splits (never the evaluation splits).
- `TextFileSource` (``.txt``) and `JsonlSource` (``.jsonl``, one JSON object per line with a text field):
  any corpus a user names for real models.
- `ListSource`: texts held in memory.

Use `text_source` to build one from a name or path. An empty or whitespace-only text is an error.
"""

from __future__ import annotations

import json
import platform
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from dllm_sampler import tasks

__all__ = [
    "ArithmeticSource",
    "JsonlSource",
    "ListSource",
    "StdlibCodeSource",
    "TextFileSource",
    "TextSource",
    "text_source",
]


def _checked(text: object, where: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{where}: expected a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{where} is empty; calibration text must be non-empty (remove it or fill it)")
    return text


class TextSource(ABC):
    """An ordered, possibly endless stream of non-empty texts, plus a description for provenance."""

    @abstractmethod
    def texts(self) -> Iterator[str]:
        """Yield the texts in order (the same order on every call)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable description (kind and parameters) recorded in the set's provenance."""


class ListSource(TextSource):
    """Texts held in memory, e.g. ``ListSource(["first prompt", "second prompt"])``."""

    def __init__(self, texts: Sequence[str], name: str = "list") -> None:
        if isinstance(texts, str):
            raise TypeError("ListSource takes a sequence of strings, not a single string; wrap it in a list")
        self._texts = [_checked(t, f"text #{i}") for i, t in enumerate(texts)]
        if not self._texts:
            raise ValueError("ListSource got no texts; give at least one non-empty string")
        self.name = name

    def texts(self) -> Iterator[str]:
        return iter(self._texts)

    def describe(self) -> dict[str, Any]:
        return {"kind": "list", "name": self.name, "num_texts": len(self._texts)}


class TextFileSource(TextSource):
    """A UTF-8 ``.txt`` file, split into texts by ``split``.

    ``"paragraph"`` (default): blocks separated by blank lines; ``"line"``: one text per non-blank line;
    ``"file"``: the whole file is one text.
    """

    def __init__(self, path: str | Path, split: Literal["paragraph", "line", "file"] = "paragraph") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"text source {self.path} does not exist (or is not a file)")
        if split not in ("paragraph", "line", "file"):
            raise ValueError(f"split must be 'paragraph', 'line' or 'file', got {split!r}")
        self.split = split

    def texts(self) -> Iterator[str]:
        content = self.path.read_text(encoding="utf-8")
        if not content.strip():
            raise ValueError(f"{self.path} is empty; calibration text must be non-empty")
        if self.split == "file":
            yield content
            return
        if self.split == "line":
            yield from (line for line in content.splitlines() if line.strip())
            return
        block: list[str] = []
        for line in [*content.splitlines(), ""]:
            if line.strip():
                block.append(line)
            elif block:
                yield "\n".join(block)
                block = []

    def describe(self) -> dict[str, Any]:
        return {"kind": "txt", "path": str(self.path), "split": self.split}


class JsonlSource(TextSource):
    """A ``.jsonl`` file: one JSON object per line, the text under ``field`` (default ``"text"``).

    Blank lines are skipped; a line that is not a JSON object, lacks ``field`` or holds an empty text is an
    error naming the line.
    """

    def __init__(self, path: str | Path, field: str = "text") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"text source {self.path} does not exist (or is not a file)")
        if not field:
            raise ValueError("field must be a non-empty key name, e.g. 'text'")
        self.field = field

    def texts(self) -> Iterator[str]:
        found = False
        with self.path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{self.path}:{lineno}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{where} is not valid JSON: {err}") from err
                if not isinstance(record, dict) or self.field not in record:
                    keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                    raise ValueError(
                        f"{where} has no field {self.field!r} (found {keys}); pass field=<the text key>"
                    )
                found = True
                yield _checked(record[self.field], f"{where} field {self.field!r}")
        if not found:
            raise ValueError(f"{self.path} holds no records; calibration text must be non-empty")

    def describe(self) -> dict[str, Any]:
        return {"kind": "jsonl", "path": str(self.path), "field": self.field}


class ArithmeticSource(TextSource):
    """Endless seeded arithmetic word problems from ``dllm_sampler.tasks.arithmetic``'s training split.

    Each text is the prompt the model sees (``format_prompt``); with ``with_answers`` the formatted answer
    follows it, as in the tiny models' training text. Held-out (evaluation) problems never appear.
    """

    def __init__(self, seed: int = 0, digits: tuple[int, int] = (2, 3), with_answers: bool = False) -> None:
        self.seed, self.digits, self.with_answers = seed, tuple(digits), with_answers

    def texts(self) -> Iterator[str]:
        for problem in tasks.train_split(self.seed, self.digits):  # type: ignore[arg-type]
            prompt = tasks.format_prompt(problem)
            yield prompt + tasks.format_answer(problem) if self.with_answers else prompt

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "arithmetic",
            "seed": self.seed,
            "digits": list(self.digits),
            "with_answers": self.with_answers,
        }


class StdlibCodeSource(TextSource):
    """The training split of ``dllm_sampler.tasks.code``: Python standard-library modules, one text each.

    The modules reserved for evaluation (``tasks.HELDOUT_MODULES``) are excluded. The text depends on the
    interpreter version, which the description records.
    """

    def texts(self) -> Iterator[str]:
        for _, text in tasks.code_texts("train"):
            if text.strip():
                yield text

    def describe(self) -> dict[str, Any]:
        return {"kind": "stdlib-code", "split": "train", "python": platform.python_version()}


def text_source(spec: str | Path | TextSource, field: str = "text") -> TextSource:
    """Build a source from ``"arithmetic"``, ``"code"`` or a path to a ``.txt`` / ``.jsonl`` file.

    ``field`` is the text key of ``.jsonl`` records. A `TextSource` is returned unchanged.
    """
    if isinstance(spec, TextSource):
        return spec
    if spec == "arithmetic":
        return ArithmeticSource()
    if spec == "code":
        return StdlibCodeSource()
    path = Path(spec)
    if path.suffix == ".txt":
        return TextFileSource(path)
    if path.suffix == ".jsonl":
        return JsonlSource(path, field=field)
    raise ValueError(
        f"unknown text source {str(spec)!r}: use 'arithmetic', 'code', or a .txt / .jsonl file path"
    )
