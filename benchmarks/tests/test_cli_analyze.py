"""``dllmq analyze`` end to end on a saved random model and its RTN-quantized folder: PNG and CSV outputs,
the reference taken from the provenance, the default output folder, and clear errors."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import shutil
from pathlib import Path

import pytest
from dllm_bench.cli import main
from dllm_bench.evaluation import OutlierRow, StepRow
from dllm_sampler.tasks import answer_generation_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_outliers_writes_a_png_and_a_csv(rtn_folders, tmp_path, capsys) -> None:
    _, quantized = rtn_folders
    out = tmp_path / "out"
    argv = ["analyze", "outliers", "--model", str(quantized), "--out", str(out), "--problems", "2"]
    before = os.umask(0o022)
    try:
        assert main([*argv, "--buckets", "2"]) == 0
    finally:
        os.umask(before)
    assert_png(out / "outliers.png")
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes == {"outliers.png": 0o644, "outliers.csv": 0o644}  # the umask's, not tempfile's 0600
    rows = read_csv(out / "outliers.csv")
    assert list(rows[0]) == [f.name for f in dataclasses.fields(OutlierRow)]
    keys = {(int(r["layer"]), r["role"]) for r in rows}
    assert keys == {(layer, role) for layer in (0, 1) for role in ("qkv", "o", "gate_up", "down")}
    assert {r["bucket"] for r in rows} <= {"0", "1"} and all(float(r["outlier_ratio"]) >= 1 for r in rows)
    printed = capsys.readouterr().out
    assert all(role in printed for role in ("qkv", "gate_up", "down")) and str(out) in printed


def test_steps_takes_the_reference_from_the_provenance(rtn_folders, tmp_path, capsys) -> None:
    reference, quantized = rtn_folders
    copy = shutil.copytree(quantized, tmp_path / "q")
    provenance_file = copy / "dllmq_provenance.json"
    provenance = json.loads(provenance_file.read_text())
    assert provenance["model"] == str(reference.resolve())  # recorded by dllmq quantize
    out = tmp_path / "out"
    argv = ["analyze", "steps", "--model", str(copy), "--problems", "1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"vs {reference}" in printed and "mask ratio" in printed
    assert_png(out / "steps.png")
    rows = read_csv(out / "steps.csv")
    assert list(rows[0]) == [f.name for f in dataclasses.fields(StepRow)]
    assert [int(r["step"]) for r in rows] == list(range(answer_generation_config("llada").steps))
    ratios = [float(r["mask_ratio"]) for r in rows]
    assert ratios[0] == 1.0 and all(a >= b for a, b in itertools.pairwise(ratios))
    assert all(float(r["kl"]) >= 0 for r in rows) and max(float(r["kl"]) for r in rows) > 0

    provenance["model"] = str(tmp_path / "moved-away")
    provenance_file.write_text(json.dumps(provenance))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--reference is required" in err and "moved-away" in err


def test_steps_of_a_model_against_itself_are_zero(rtn_folders, tmp_path) -> None:
    reference, _ = rtn_folders
    argv = ["analyze", "steps", "--model", str(reference), "--reference", str(reference)]
    assert main([*argv, "--problems", "1", "--out", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "steps.csv")
    assert len(rows) == answer_generation_config("llada").steps
    assert all(float(r["kl"]) == float(r["disagreement"]) == float(r["divergence"]) == 0.0 for r in rows)


def test_default_output_folder_is_under_runs(rtn_folders, tmp_path, monkeypatch) -> None:
    _, quantized = rtn_folders
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", "outliers", "--model", str(quantized), "--problems", "1", "--buckets", "1"]) == 0
    assert_png(tmp_path / "runs" / "analyze-q-outliers" / "outliers.png")
    assert len(read_csv(tmp_path / "runs" / "analyze-q-outliers" / "outliers.csv")) == 2 * 4


def test_bad_invocations_give_clear_errors(rtn_folders, tmp_path, capsys) -> None:
    reference, quantized = rtn_folders
    assert main(["analyze", "steps", "--model", str(reference), "--out", str(tmp_path)]) == 2
    assert "not a quantized folder" in capsys.readouterr().err
    assert main(["analyze", "outliers", "--model", str(quantized), "--problems", "0"]) == 2
    assert "--problems must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["analyze", "--model", str(quantized)])  # the mode is required
