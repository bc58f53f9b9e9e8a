"""Local calibration corpora: parquet files, saved Hugging Face datasets, shard folders, named corpora.

Hubs may be unreachable, so every corpus is a local path:

- a ``.txt`` / ``.raw`` file (WikiText-2's ``wiki.train.raw``), a JSON-lines file (``.jsonl``/``.json``,
  plain, ``.gz`` or ``.zst``: C4's ``c4-train.*.json.gz``, the Pile's ``val.jsonl.zst``) or a ``.parquet``
  file (needs ``pyarrow``);
- a folder written by ``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (needs
  ``datasets``; a ``DatasetDict``'s split is chosen by ``split``);
- a folder of parquet / JSON-lines shards laid out like a hub snapshot (``wikitext-2-raw-v1/
  train-00000-of-00001.parquet``): the shards of ``split`` (file or folder names holding the split name)
  in sorted order.

`CORPORA` names the corpora the papers calibrate on and how each is read: `corpus_source` wraps a path in
those conventions (WikiText-2's rows are lines of articles, joined by blank lines as GPTQ's loader does;
Pile and C4 records are documents, separated by the model's EOS).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dllm_calib.sources import (
    JSONL_SUFFIXES,
    JsonlSource,
    MissingReaderError,
    TextFileSource,
    TextSource,
    suffix_of,
)

__all__ = [
    "CORPORA",
    "Corpus",
    "CorpusSource",
    "HFDatasetSource",
    "ParquetSource",
    "ShardFolderSource",
    "corpus_source",
    "file_source",
    "parse_calib_spec",
]

INSTALL_HINT = (
    "run `uv sync` in the dllmq workspace (its dev group has it) or `pip install 'dllm-calib[corpora]'`"
)
TEXT_SUFFIXES = (".txt", ".raw")
SHARD_SUFFIXES = (".parquet", *JSONL_SUFFIXES)
SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}
"""Split names and the spellings of each in shard names (the Pile's validation file is ``val.jsonl.zst``)."""


@dataclass(frozen=True)
class Corpus:
    """A corpus the papers calibrate on and how to read it.

    Attributes:
        name: the key in `CORPORA` and in ``--calib NAME=PATH``.
        title: what it is, for printed output.
        separator: None: the model's EOS between records (documents); a string: records joined by it.
        split: the split read from a saved ``DatasetDict`` or a shard folder.
        origin: where the reference tools get it, to tell a user what to download.
    """

    name: str
    title: str
    separator: str | None
    split: str
    origin: str


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus(
            "wikitext2",
            "WikiText-2 (raw), train split",
            "\n\n",
            "train",
            "hub dataset wikitext (Salesforce/wikitext), config wikitext-2-raw-v1, split train",
        ),
        Corpus(
            "pile",
            "the Pile, validation set",
            None,
            "validation",
            "llm-awq's val.jsonl.zst (hub dataset mit-han-lab/pile-val-backup)",
        ),
        Corpus(
            "c4",
            "C4 (English), first train shard",
            None,
            "train",
            "hub dataset allenai/c4, file en/c4-train.00000-of-01024.json.gz",
        ),
    )
}
"""The named corpora: ``wikitext2`` (GPTQ, SmoothQuant, QuaRot, DuQuant), ``pile`` (AWQ), ``c4``
(Quant-dLLM)."""


def _nonempty(texts: Iterable[str], where: str, field: str) -> Iterator[str]:
    """Yield the non-empty strings of ``texts``; raise if a value is not a string or none is non-empty."""
    found = False
    for text in texts:
        if text is None:
            continue
        if not isinstance(text, str):
            raise ValueError(
                f"{where}: column {field!r} holds {type(text).__name__}, not text; pass the text field"
            )
        if text.strip():
            found = True
            yield text
    if not found:
        raise ValueError(f"{where} holds no non-empty text under {field!r}; the corpus is empty")


class ParquetSource(TextSource):
    """A ``.parquet`` file, the texts in column ``field`` (read in batches with ``pyarrow``); empty and null
    values are skipped."""

    def __init__(self, path: str | Path, field: str = "text") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"text source {self.path} does not exist (or is not a file)")
        self.field = field

    def _file(self) -> Any:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingReaderError(f"reading {self.path} needs pyarrow; {INSTALL_HINT}") from None
        parquet = pq.ParquetFile(self.path)
        names = parquet.schema_arrow.names
        if self.field not in names:
            raise ValueError(
                f"{self.path} has no column {self.field!r} (columns: {names}); pass field=<the text column>"
            )
        return parquet

    def texts(self) -> Iterator[str]:
        parquet = self._file()

        def values() -> Iterator[Any]:
            for batch in parquet.iter_batches(batch_size=1024, columns=[self.field]):
                yield from batch.column(0).to_pylist()

        yield from _nonempty(values(), str(self.path), self.field)

    def describe(self) -> dict[str, Any]:
        return {"kind": "parquet", "path": str(self.path), "field": self.field}


class HFDatasetSource(TextSource):
    """A folder saved by ``datasets`` (``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``), read with
    ``datasets.load_from_disk``; of a ``DatasetDict`` the ``split`` (default ``train``, or its only split)."""

    def __init__(
        self, path: str | Path, field: str = "text", split: str | None = None, prefer: str = "train"
    ) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"saved dataset {self.path} does not exist (or is not a folder)")
        self.field, self.split, self.prefer = field, split, prefer

    def _dataset(self) -> Any:
        try:
            import datasets
        except ImportError:
            raise MissingReaderError(
                f"reading the saved dataset {self.path} needs the datasets package; {INSTALL_HINT}"
            ) from None
        data = datasets.load_from_disk(str(self.path))
        if isinstance(data, datasets.DatasetDict):
            splits = sorted(data)
            split = _choose_split(self.split, self.prefer, splits)
            if split not in data:
                raise ValueError(
                    f"{self.path} has no split {split!r} (splits: {splits}); pass split=<one of them>"
                )
            data = data[split]
        if self.field not in data.column_names:
            raise ValueError(
                f"{self.path} has no column {self.field!r} (columns: {data.column_names}); "
                "pass field=<the text column>"
            )
        return data.select_columns([self.field])

    def texts(self) -> Iterator[str]:
        data = self._dataset()

        def values() -> Iterator[Any]:
            for batch in data.iter(batch_size=1024):
                yield from batch[self.field]

        yield from _nonempty(values(), str(self.path), self.field)

    def describe(self) -> dict[str, Any]:
        return {"kind": "hf-dataset", "path": str(self.path), "field": self.field, "split": self.split}


def _choose_split(split: str | None, prefer: str, present: list[str]) -> str:
    """``split`` when given, else ``prefer`` when present, else the only split (else ``prefer``, which then
    fails with the list of splits)."""
    if split is not None:
        return split
    return present[0] if prefer not in present and len(present) == 1 else prefer


def _split_tokens(relative: Path) -> set[str]:
    return set(re.split(r"[-._/\\]", relative.as_posix().lower()))


class ShardFolderSource(TextSource):
    """A folder of parquet / JSON-lines shards (a hub snapshot's layout), read in sorted path order.

    When shard names carry split names (``train-00000-of-00001.parquet``, ``c4-train.00000...``,
    ``val.jsonl.zst``), only the shards of ``split`` are read (default ``train``, or the only split).
    """

    def __init__(
        self, path: str | Path, field: str = "text", split: str | None = None, prefer: str = "train"
    ) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"shard folder {self.path} does not exist (or is not a folder)")
        self.field = field
        self.shards, self.split = self._select(split, prefer)

    def _select(self, split: str | None, prefer: str) -> tuple[list[Path], str | None]:
        files = sorted(
            p
            for p in self.path.rglob("*")
            if p.is_file() and suffix_of(p) in SHARD_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise ValueError(
                f"{self.path} holds no corpus files ({', '.join(SHARD_SUFFIXES)}) and is not a saved "
                "dataset; point at a corpus file or folder"
            )
        tagged = {
            name: [f for f in files if _split_tokens(f.relative_to(self.path)) & set(aliases)]
            for name, aliases in SPLIT_ALIASES.items()
        }
        present = sorted(name for name, shards in tagged.items() if shards)
        if not present:
            chosen = files
        else:
            wanted = _choose_split(split, prefer, present)
            if wanted not in SPLIT_ALIASES or not tagged[wanted]:
                raise ValueError(
                    f"{self.path} has no shards of split {wanted!r} (splits: {present}); pass split=<one>"
                )
            chosen, split = tagged[wanted], wanted
        folders = sorted({str(f.parent.relative_to(self.path)) for f in chosen})
        if len(folders) > 1:
            raise ValueError(
                f"{self.path} holds shards in several folders ({', '.join(folders[:4])}"
                f"{', ...' if len(folders) > 4 else ''}), e.g. several dataset configs; point at one of them"
            )
        return chosen, split

    def _source(self, shard: Path) -> TextSource:
        return (
            ParquetSource(shard, self.field) if shard.suffix == ".parquet" else JsonlSource(shard, self.field)
        )

    def texts(self) -> Iterator[str]:
        def values() -> Iterator[str]:
            for shard in self.shards:
                try:
                    yield from self._source(shard).texts()
                except ValueError as err:
                    if "the corpus is empty" not in str(err):  # an empty shard among others is fine
                        raise

        yield from _nonempty(values(), str(self.path), self.field)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "shards",
            "path": str(self.path),
            "field": self.field,
            "split": self.split,
            "shards": [str(s.relative_to(self.path)) for s in self.shards],
        }


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def file_source(
    path: Path, field: str = "text", split: str | None = None, prefer: str = "train"
) -> TextSource:
    """The source that reads ``path`` (see the module docstring for the formats).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a file of an unknown format.
    """
    if not path.exists():
        raise FileNotFoundError(
            f"calibration corpus {str(path)!r} does not exist; give a local .txt, .jsonl, .parquet file or a "
            "saved datasets folder (hubs are not read)"
        )
    if path.is_dir():
        if _is_saved_dataset(path):
            return HFDatasetSource(path, field=field, split=split, prefer=prefer)
        return ShardFolderSource(path, field=field, split=split, prefer=prefer)
    suffix = suffix_of(path)
    if suffix in TEXT_SUFFIXES:
        return TextFileSource(path)
    if suffix in JSONL_SUFFIXES:
        return JsonlSource(path, field=field)
    if suffix == ".parquet":
        return ParquetSource(path, field=field)
    raise ValueError(
        f"unknown calibration corpus format {suffix or '(no suffix)'!r} of {path}: use 'arithmetic', 'code', "
        f"a {' / '.join((*TEXT_SUFFIXES, *SHARD_SUFFIXES))} file, a saved datasets folder or a shard folder"
    )


class CorpusSource(TextSource):
    """A source read with a named corpus's conventions (`Corpus.separator`) and an optional read cap."""

    def __init__(self, base: TextSource, corpus: Corpus | None, max_read_tokens: int | None = None) -> None:
        if max_read_tokens is not None and max_read_tokens < 1:
            raise ValueError(f"max_read_tokens must be >= 1 (or None for the default), got {max_read_tokens}")
        self.base, self.corpus, self.max_read_tokens = base, corpus, max_read_tokens
        self.separator = None if corpus is None else corpus.separator

    @property
    def endless(self) -> bool:  # type: ignore[override]
        return self.base.endless

    def texts(self) -> Iterator[str]:
        return self.base.texts()

    def describe(self) -> dict[str, Any]:
        return {**self.base.describe(), "corpus": None if self.corpus is None else self.corpus.name}


def corpus_source(
    name: str | None,
    path: str | Path,
    field: str = "text",
    split: str | None = None,
    max_read_tokens: int | None = None,
) -> CorpusSource:
    """The corpus at local ``path`` read as `CORPORA` ``[name]`` says (None: a generic corpus of documents).

    Raises:
        ValueError: ``name`` is not a known corpus; bad files as in `file_source`.
    """
    corpus = None
    if name is not None:
        if name not in CORPORA:
            raise ValueError(f"unknown calibration corpus {name!r}; known corpora: {', '.join(CORPORA)}")
        corpus = CORPORA[name]
    prefer = "train" if corpus is None else corpus.split
    return CorpusSource(file_source(Path(path).expanduser(), field, split, prefer), corpus, max_read_tokens)


def parse_calib_spec(spec: str) -> tuple[str | None, str]:
    """``"wikitext2=PATH"`` -> ``("wikitext2", "PATH")``; a plain path or source name -> ``(None, spec)``.

    Raises:
        ValueError: an empty path or an unknown corpus name before ``=``.
    """
    name, sep, path = spec.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
        return None, spec
    if name not in CORPORA:
        raise ValueError(
            f"--calib {spec!r}: unknown corpus {name!r}; use "
            f"{', '.join(f'{c}=PATH' for c in CORPORA)} or a plain path"
        )
    if not path:
        raise ValueError(f"--calib {spec!r}: give the local path after '=', e.g. {name}=/data/{name}")
    return name, path
