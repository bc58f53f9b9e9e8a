"""``dllmq eval``: task scores, memory and fidelity of a quantized folder against its recorded float model."""

from __future__ import annotations

import json

from dllm_bench.cli import main

SMALL = ["--code-chunks", "2", "--mc-num", "2", "--ratios", "0.5", "1.0"]


def test_eval_compares_a_quantized_folder_with_its_source(rtn_folders, tmp_path, capsys) -> None:
    reference, quantized = rtn_folders
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(quantized), *SMALL, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["reference"] == str(reference.resolve())  # from the provenance
    assert "exact" not in report["scores"]  # the random model was not trained on the arithmetic task
    assert report["scores"]["code_nll"] > 0 and report["reference_scores"]["code_nll"] > 0
    assert report["memory"]["bits_per_weight"] == 4 + 32 / 16  # 4-bit codes + a float32 scale per 16
    rows = report["fidelity"]
    assert [(r["source"], r["mask_ratio"]) for r in rows] == [
        (source, ratio) for source in ("arithmetic", "code") for ratio in (0.5, 1.0)
    ]
    assert all(0.0 <= r["top1_agreement"] <= 1.0 and r["kl"] > 0.0 for r in rows)
    printed = capsys.readouterr().out
    assert "ΔNLL" in printed and "bits/weight" in printed and "top-1 agreement" in printed


def test_eval_of_a_model_against_itself_is_exact(rtn_folders, tmp_path) -> None:
    reference, _ = rtn_folders
    out = tmp_path / "self.json"
    argv = ["eval", "--model", str(reference), "--reference", str(reference), *SMALL, "--json", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert all(r["top1_agreement"] == 1.0 and r["kl"] == 0.0 for r in report["fidelity"])
    assert report["scores"] == report["reference_scores"]
    assert report["memory"]["bits_per_weight"] == 32.0


def test_eval_scores_arithmetic_for_task_models(tmp_path) -> None:
    out = tmp_path / "tiny.json"
    argv = ["eval", "--model", "tiny-llada", "--problems", "3", "--code-chunks", "0", "--json", str(out)]
    assert main(argv) == 0
    scores = json.loads(out.read_text())["scores"]
    assert set(scores) == {"exact", "chars"}
    assert 0.0 <= scores["exact"] <= 1.0 and 0.5 < scores["chars"] <= 1.0  # the trained model copies operands


def test_eval_rejects_bad_arguments(rtn_folders, capsys) -> None:
    reference, _ = rtn_folders
    assert main(["eval", "--model", str(reference), "--ratios", "0"]) == 2
    assert "--ratios must lie in (0, 1]" in capsys.readouterr().err
    assert main(["eval", "--model", str(reference), "--mc-num", "0"]) == 2
    assert "--mc-num >= 1" in capsys.readouterr().err
