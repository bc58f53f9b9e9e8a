"""Local corpus loaders (txt, jsonl, compressed jsonl, parquet, saved datasets, shard folders), the named
corpora, ``--calib NAME=PATH`` parsing, and one clear error per bad input."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from dllm_calib import (
    CORPORA,
    HFDatasetSource,
    JsonlSource,
    MissingReaderError,
    ParquetSource,
    PlainConfig,
    ShardFolderSource,
    TextFileSource,
    corpus_source,
    parse_calib_spec,
    text_source,
)

ROWS = ["", " = Article = \n", "", " first line of the article \n", " second line \n", ""]
TEXTS = [r for r in ROWS if r.strip()]


def _jsonl(path: Path, rows: list[str], field: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({field: r, "id": i}) + "\n" for i, r in enumerate(rows)))
    return path


def _parquet(path: Path, rows: list[str | None], field: str = "text") -> Path:
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (dllm-calib's corpora extra)")
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({field: rows, "id": list(range(len(rows)))}), path)
    return path


def _datasets():
    return pytest.importorskip("datasets", reason="datasets is not installed (dllm-calib's corpora extra)")


def test_txt_corpus(tmp_path: Path) -> None:
    path = tmp_path / "wiki.train.raw"
    path.write_text(" = Article = \n\n first line\n second line\n\n = = Section = = \n")
    source = corpus_source("wikitext2", path)
    assert isinstance(source.base, TextFileSource) and source.separator == "\n\n"
    texts = list(source.texts())
    assert texts == [" = Article = ", " first line\n second line", " = = Section = = "]
    assert "\n\n".join(texts) + "\n" == path.read_text()  # the stream reads the file as it is
    assert source.describe()["corpus"] == "wikitext2"


def test_jsonl_corpus_skips_empty_records_and_reads_a_custom_field(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "c.jsonl", ROWS, field="content")
    assert list(JsonlSource(path, field="content").texts()) == TEXTS
    assert list(corpus_source("c4", path, field="content").texts()) == TEXTS
    with pytest.raises(ValueError, match=r"c\.jsonl:1 has no field 'text' \(found \['content', 'id'\]\)"):
        list(text_source(path).texts())


def test_compressed_jsonl_shard(tmp_path: Path) -> None:
    path = tmp_path / "c4-train.00000-of-01024.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"text": t}) + "\n" for t in TEXTS)
    assert list(text_source(path).texts()) == TEXTS
    zst = tmp_path / "val.jsonl.zst"
    if importlib.util.find_spec("zstandard") is None:
        zst.write_bytes(b"not read")
        with pytest.raises(ImportError, match="pip install zstandard"):
            list(text_source(zst).texts())
    else:
        import zstandard

        zst.write_bytes(
            zstandard.ZstdCompressor().compress(
                "".join(json.dumps({"text": t}) + "\n" for t in TEXTS).encode()
            )
        )
        assert list(text_source(zst).texts()) == TEXTS


def test_parquet_corpus(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "train.parquet", [*ROWS, None])
    source = text_source(path)
    assert isinstance(source, ParquetSource) and list(source.texts()) == TEXTS
    with pytest.raises(ValueError, match=r"has no column 'body' \(columns: \['text', 'id'\]\); pass field="):
        list(text_source(path, field="body").texts())
    with pytest.raises(ValueError, match="column 'id' holds int, not text"):
        list(text_source(path, field="id").texts())


def test_saved_dataset_and_dataset_dict(tmp_path: Path) -> None:
    datasets = _datasets()
    single = tmp_path / "single"
    datasets.Dataset.from_dict({"text": ROWS}).save_to_disk(str(single))
    assert isinstance(text_source(single), HFDatasetSource) and list(text_source(single).texts()) == TEXTS
    both = tmp_path / "dict"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ROWS}),
            "test": datasets.Dataset.from_dict({"text": ["held-out text"]}),
        }
    ).save_to_disk(str(both))
    assert list(text_source(both).texts()) == TEXTS
    assert list(text_source(both, split="test").texts()) == ["held-out text"]
    with pytest.raises(ValueError, match=r"has no split 'validation' \(splits: \['test', 'train'\]\)"):
        list(corpus_source("pile", both).texts())
    with pytest.raises(ValueError, match="has no column 'content'"):
        list(text_source(single, field="content").texts())
    only_val = tmp_path / "val"
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"text": TEXTS})}).save_to_disk(
        str(only_val)
    )
    assert list(corpus_source("wikitext2", only_val).texts()) == TEXTS  # the only split


def test_hub_snapshot_folder_reads_the_train_shards(tmp_path: Path) -> None:
    config = tmp_path / "wikitext" / "wikitext-2-raw-v1"
    _parquet(config / "train-00000-of-00002.parquet", ROWS[:3])
    _parquet(config / "train-00001-of-00002.parquet", ROWS[3:])
    _parquet(config / "test-00000-of-00001.parquet", ["held-out text"])
    source = corpus_source("wikitext2", config)
    assert isinstance(source.base, ShardFolderSource) and list(source.texts()) == TEXTS
    assert source.describe()["shards"] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert list(text_source(config, split="test").texts()) == ["held-out text"]
    _parquet(tmp_path / "wikitext" / "wikitext-103-raw-v1" / "train-00000-of-00001.parquet", ["other"])
    with pytest.raises(ValueError, match=r"holds shards in several folders .* point at one of them"):
        text_source(tmp_path / "wikitext")


def test_pile_folder_with_its_validation_file(tmp_path: Path) -> None:
    _jsonl(tmp_path / "pile" / "val.jsonl", ROWS)
    assert list(corpus_source("pile", tmp_path / "pile").texts()) == TEXTS
    with pytest.raises(ValueError, match=r"no shards of split 'train' \(splits: \['validation'\]\)"):
        text_source(tmp_path / "pile", split="train")


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda d: d / "missing.jsonl", FileNotFoundError, "does not exist; give a local"),
        (lambda d: _jsonl(d / "empty.jsonl", ["", "  "]), ValueError, "holds no non-empty text under 'text'"),
        (lambda d: _parquet(d / "empty.parquet", ["", None]), ValueError, "holds no non-empty text"),
        (
            lambda d: (d / "x.csv").write_text("a") and d / "x.csv",
            ValueError,
            "unknown calibration corpus format",
        ),
        (lambda d: (d / "sub").mkdir() or d / "sub", ValueError, "holds no corpus files"),
    ],
    ids=["missing", "empty-jsonl", "empty-parquet", "unknown-format", "empty-folder"],
)
def test_bad_corpora_give_one_clear_error(tmp_path: Path, make, error, message) -> None:
    with pytest.raises(error, match=message):
        list(text_source(make(tmp_path)).texts())


def test_calib_spec_parsing() -> None:
    assert parse_calib_spec("wikitext2=/data/wiki") == ("wikitext2", "/data/wiki")
    assert parse_calib_spec("c4=rel/c4.json.gz") == ("c4", "rel/c4.json.gz")
    assert parse_calib_spec("/data/my=corpus.txt") == (None, "/data/my=corpus.txt")
    assert parse_calib_spec("arithmetic") == (None, "arithmetic")
    with pytest.raises(ValueError, match="unknown corpus 'wiki'; use wikitext2=PATH, pile=PATH, c4=PATH"):
        parse_calib_spec("wiki=/data")
    with pytest.raises(ValueError, match="give the local path after '='"):
        parse_calib_spec("pile=")
    with pytest.raises(ValueError, match="unknown calibration corpus 'wiki'"):
        corpus_source("wiki", "/data")
    assert set(CORPORA) == {"wikitext2", "pile", "c4"}


def test_windows_from_a_parquet_corpus(tmp_path: Path, char_model) -> None:
    rows = [f"document {i} " + "lorem ipsum " * 5 for i in range(50)]
    source = corpus_source("c4", _parquet(tmp_path / "c4.parquet", rows))
    cset = PlainConfig(num_samples=8, seq_len=32, seed=0).build(char_model, source)
    prov = cset.provenance.source
    assert prov["kind"] == "parquet" and prov["corpus"] == "c4" and prov["texts_read"] == 50
    assert prov["reused_fraction"] == 0.0 and len(cset) == 8


@pytest.mark.parametrize(("module", "suffix"), [("pyarrow.parquet", "parquet"), ("datasets", "dataset")])
def test_a_missing_reader_package_names_the_install_command(
    tmp_path: Path, monkeypatch, module, suffix
) -> None:
    if suffix == "parquet":
        path = _parquet(tmp_path / "c.parquet", TEXTS)
    else:
        path = tmp_path / "saved"
        _datasets().Dataset.from_dict({"text": TEXTS}).save_to_disk(str(path))
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(MissingReaderError, match=r"uv sync.*pip install 'dllm-calib\[corpora\]'"):
        list(text_source(path).texts())
