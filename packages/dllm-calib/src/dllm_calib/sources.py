"""Where calibration text comes from: the `TextSource` abstraction and its implementations.

A source yields texts (documents or prompts) in a fixed order, so a builder that reads the first ``n`` texts
of a source is deterministic. Sources:

- `ArithmeticSource`, `StdlibCodeSource`: the repository's own generators (``dllm_sampler.tasks``), the
  natural data for the tiny reference models; only their training splits (never the evaluation splits).
- `TextFileSource` (``.txt``) and `JsonlSource` (``.jsonl`` / ``.json`` lines, optionally ``.gz`` or
  ``.zst`` compressed, one JSON object per line with a text field): any corpus a user names for real models.
- `ListSource`: texts held in memory.
- ``dllm_calib.corpora``: parquet files, saved Hugging Face datasets, folders of shards, and the named
  corpora the papers calibrate on (WikiText-2, Pile, C4).

Use `text_source` to build one from a name or path. An empty or whitespace-only text is an error, except in
record corpora (jsonl, parquet, datasets), where empty records (WikiText-2's blank rows) are skipped.

How a source is read into tokens is described by three attributes the readers
(``dllm_calib.stream.token_stream``) use: ``endless`` (a generator that never ends: read only what is
needed), ``separator`` (None: the model's EOS between texts; a string: texts joined by it before encoding,
as WikiText-2's rows are lines of articles) and ``max_read_tokens`` (a cap on how much of a huge corpus is
read; None: the reader's default).
"""

from __future__ import annotations

import gzip
import io
import json
import platform
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar, Literal

from dllm_sampler import tasks

__all__ = [
    "ArithmeticSource",
    "JsonlSource",
    "ListSource",
    "MissingReaderError",
    "StdlibCodeSource",
    "TextFileSource",
    "TextSource",
    "text_source",
]


class MissingReaderError(ImportError, ValueError):
    """A corpus format whose reader package is not installed. An ImportError (a package is missing) and a
    ValueError (the input cannot be read as given), so command lines report it in one line."""


def _checked(text: object, where: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{where}: expected a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{where} is empty; calibration text must be non-empty (remove it or fill it)")
    return text


class TextSource(ABC):
    """An ordered, possibly endless stream of non-empty texts, plus a description for provenance.

    Attributes:
        endless: the source never ends (a generator); readers take only the tokens they need.
        separator: None to put the model's EOS between texts, or the string that joins them.
        max_read_tokens: most tokens a reader takes from this source (None: the reader's default).
    """

    endless: ClassVar[bool] = False
    separator: str | None = None
    max_read_tokens: int | None = None

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


JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
"""File endings `JsonlSource` reads (``.json`` is JSON lines, as C4's ``c4-train.*.json.gz`` shards)."""


def suffix_of(path: Path) -> str:
    """The file's ending including a compression suffix: ``.jsonl.gz``, ``.parquet``, ``.txt``."""
    suffixes = path.suffixes
    if len(suffixes) >= 2 and suffixes[-1] in (".gz", ".zst"):
        return "".join(suffixes[-2:])
    return path.suffix


def _open_text(path: Path) -> IO[str]:
    """``path`` opened as UTF-8 text, decompressing ``.gz`` (stdlib) and ``.zst`` (``zstandard``)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    if path.suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise MissingReaderError(
                f"{path} is zstd-compressed and the zstandard package is not installed; run `pip install "
                f"zstandard` or decompress it first (`zstd -d {path.name}`)"
            ) from None
        raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb"))
        return io.TextIOWrapper(raw, encoding="utf-8")
    return path.open(encoding="utf-8")


class JsonlSource(TextSource):
    """A JSON-lines file (``.jsonl`` / ``.json``, plain, ``.gz`` or ``.zst``): one JSON object per line,
    the text under ``field`` (default ``"text"``).

    Blank lines and records with an empty text are skipped; a line that is not a JSON object or lacks
    ``field`` is an error naming the line, and so is a file without any non-empty text.
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
        with _open_text(self.path) as fh:
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
                text = record[self.field]
                if not isinstance(text, str):
                    raise ValueError(
                        f"{where} field {self.field!r}: expected a string, got {type(text).__name__}"
                    )
                if text.strip():
                    found = True
                    yield text
        if not found:
            raise ValueError(f"{self.path} holds no non-empty text under {self.field!r}; the corpus is empty")

    def describe(self) -> dict[str, Any]:
        return {"kind": "jsonl", "path": str(self.path), "field": self.field}


class ArithmeticSource(TextSource):
    """Endless seeded arithmetic word problems from ``dllm_sampler.tasks.arithmetic``'s training split.

    Each text is the prompt the model sees (``format_prompt``); with ``with_answers`` the formatted answer
    follows it, as in the tiny models' training text. Held-out (evaluation) problems never appear.
    """

    endless: ClassVar[bool] = True

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


def text_source(spec: str | Path | TextSource, field: str = "text", split: str | None = None) -> TextSource:
    """Build a source from ``"arithmetic"``, ``"code"`` or a path.

    Paths: a ``.txt`` file, a JSON-lines file (`JSONL_SUFFIXES`), a ``.parquet`` file, a folder saved by
    ``datasets`` (``save_to_disk``) or a folder of parquet / JSON-lines shards (``dllm_calib.corpora``).
    ``field`` is the text key of records; ``split`` picks the split of a saved ``DatasetDict`` or of a
    shard folder (default: ``train``, or the only one). A `TextSource` is returned unchanged.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: an unknown name or file format.
    """
    if isinstance(spec, TextSource):
        return spec
    if spec == "arithmetic":
        return ArithmeticSource()
    if spec == "code":
        return StdlibCodeSource()
    from dllm_calib import corpora  # corpora builds on this module

    return corpora.file_source(Path(spec).expanduser(), field=field, split=split)
