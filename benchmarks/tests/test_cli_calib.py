"""``dllmq calib build``: calibration sets for other tools (hf) and for dllmq recipes (dllmq)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from dllm_bench.cli import main
from dllm_bench.pipeline import load_calibration_list
from dllm_calib import CalibrationSet
from dllm_sampler import load


def test_hf_format_is_jsonl_rows_with_a_card_and_umask_modes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "plain"
    before = os.umask(0o022)
    try:
        argv = [
            "calib",
            "build",
            "--builder",
            "plain",
            "--out",
            str(out),
            "--samples",
            "3",
            "--seq-len",
            "16",
        ]
        assert main(argv) == 0
    finally:
        os.umask(before)
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "dllmq_calibration.json", "train.jsonl"]
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o644}
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(set(r) == {"input_ids", "attention_mask"} for r in rows)
    assert all(len(r["input_ids"]) == len(r["attention_mask"]) == 16 for r in rows)
    meta = json.loads((out / "dllmq_calibration.json").read_text())
    assert meta["num_rows"] == 3 and meta["builder"] == "plain" and meta["dtype"] == "float32"
    assert "path: train.jsonl" in (out / "README.md").read_text()  # what datasets.load_dataset reads
    mask = load("tiny-llada").mask_token_id
    assert len(load_calibration_list(out / "train.jsonl", mask)) == 3  # a recipe's calibration.path


def test_tmas_rows_keep_their_mask_tokens(tmp_path: Path) -> None:
    out = tmp_path / "tmas"
    argv = ["calib", "build", "--builder", "tmas", "--out", str(out), "--prompts", "1", "--samples", "4"]
    assert main([*argv, "--sampler", "steps=4", "--param", "on_short=redistribute", "--no-progress"]) == 0
    meta = json.loads((out / "dllmq_calibration.json").read_text())
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and meta["provenance"]["builder"] == "tmas"
    assert any(meta["mask_token_id"] in r["input_ids"] for r in rows)


def test_dllmq_format_is_a_calibration_set(tmp_path: Path) -> None:
    out = tmp_path / "mcs"
    argv = ["calib", "build", "--builder", "mcs", "--out", str(out), "--samples", "2", "--seq-len", "16"]
    assert main([*argv, "--format", "dllmq", "--param", "num_timesteps=3"]) == 0
    cset = CalibrationSet.load(out)
    assert len(cset) == 6 and cset.provenance.builder == "mcs"


def test_source_reads_a_local_corpus_as_quantize_calib_does(tmp_path: Path) -> None:
    """``--source [CORPUS=]PATH`` takes the formats of ``dllmq quantize --calib`` (here a parquet file read
    with WikiText-2's conventions): the windows come from that text."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    corpus = tmp_path / "wiki.parquet"
    pq.write_table(pa.table({"text": [" = Title = \n", " 12 + 7 = 19 ; 3 * 4 = 12 ;\n"] * 200}), corpus)
    out = tmp_path / "wiki"
    argv = ["calib", "build", "--builder", "plain", "--out", str(out), "--samples", "2", "--seq-len", "16"]
    assert main([*argv, "--source", f"wikitext2={corpus}", "--no-progress"]) == 0
    meta = json.loads((out / "dllmq_calibration.json").read_text())
    assert meta["source"] == f"wikitext2={corpus}"
    assert meta["provenance"]["source"]["corpus"] == "wikitext2"
    tokenizer = load("tiny-llada").tokenizer
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert all(set(tokenizer.decode(r["input_ids"])) <= set(" =Title\n0123456789+*;") for r in rows)


@pytest.mark.parametrize("builder", ["plain", "mcs"])
def test_an_existing_set_is_not_replaced(tmp_path: Path, builder: str, capsys) -> None:
    out = tmp_path / "set"
    argv = ["calib", "build", "--builder", builder, "--out", str(out), "--samples", "2", "--seq-len", "8"]
    assert main(argv) == 0
    before = (out / "train.jsonl").read_bytes()
    assert main([*argv, "--seed", "1"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (out / "train.jsonl").read_bytes() == before
