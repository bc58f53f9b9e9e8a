"""``dllmq results`` on a two-cell matrix: the generated section, the kept prose, the raw JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dllm_bench.cli import main
from dllm_bench.commands.results import MARKER
from dllm_bench.results import default_cells

SMALL = ["--problems", "6", "--code-chunks", "2", "--mc-num", "2"]


def test_matrix_covers_every_setting_for_both_models() -> None:
    cells = default_cells()
    assert {c.model for c in cells} == {"tiny-llada", "tiny-dream"}
    assert {c.setting for c in cells} == {"W4A16", "W3A16", "W2A16", "W8A8", "W4A8", "W4A4"}
    assert len(set(cells)) == len(cells)
    recipes = {c.recipe for c in cells}
    assert {"rtn", "gptq", "awq", "smoothquant", "quarot", "duquant", "dllmquant", "quant-dllm"} == recipes
    assert not any(c.recipe == "quant-dllm" and c.setting == "W4A16" for c in cells)  # ABMP: 2-3 bits only


def test_results_rewrites_the_generated_section(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "results.md"
    out.write_text(f"# Results\n\nHand-written prose.\n\n{MARKER}\n\nstale numbers\n")
    argv = ["results", "--models", "tiny-llada", "--methods", "rtn", "--settings", "W4A16", "W8A8"]
    assert main([*argv, *SMALL, "--out", str(out)]) == 0

    text = out.read_text()
    assert text.startswith("# Results\n\nHand-written prose.\n")
    assert "stale numbers" not in text and text.count(MARKER) == 1
    assert "uv run dllmq results --models tiny-llada --methods rtn --settings W4A16 W8A8 --problems 6" in text
    assert "| rtn | W4A16 |" in text and "| rtn | W8A8 |" in text
    raw = json.loads(out.with_suffix(".json").read_text())
    assert [(c["recipe"], c["setting"]) for c in raw["cells"]] == [("rtn", "W4A16"), ("rtn", "W8A8")]
    for cell in raw["cells"]:
        assert 0.0 <= cell["exact"] <= 1.0 and 0.0 <= cell["top1"] <= 1.0
        assert cell["kl"] >= 0.0 and cell["seconds"] > 0.0
    assert raw["floats"]["tiny-llada"]["kl"] is None
    assert "[2/2] tiny-llada rtn W8A8" in capsys.readouterr().out


def test_results_rejects_an_empty_selection(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["results", "--models", "tiny-llada", "--methods", "quant-dllm", "--settings", "W4A16"]
    assert main([*argv, "--out", str(tmp_path / "r.md")]) == 2
    assert "no cell of the matrix matches" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()
