"""``dllmq results`` on a two-cell matrix: the generated section, the kept prose, the raw JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dllm_bench.cli import main
from dllm_bench.commands.results import MARKER
from dllm_bench.results import default_cells, moe_cells

SMALL = ["--problems", "6", "--code-chunks", "2", "--mc-num", "2"]


def test_matrix_covers_every_setting_for_both_models() -> None:
    cells = default_cells()
    assert {c.model for c in cells} == {"tiny-llada", "tiny-dream"}
    assert {c.setting for c in cells} == {"W4A16", "W3A16", "W2A16", "W8A8", "W4A8", "W4A4"}
    assert len(set(cells)) == len(cells)
    recipes = {c.recipe for c in cells}
    assert {"rtn", "gptq", "awq", "smoothquant", "quarot", "duquant", "dllmquant", "quant-dllm"} == recipes
    assert not any(c.recipe == "quant-dllm" and c.setting == "W4A16" for c in cells)  # ABMP: 2-3 bits only
    for setting in ("W4A16", "W3A16", "W2A16"):  # QuaRot + GPTQ beside QuaRot + CGQ: CGQ's own share
        assert {"gptq", "quarot", "dllmquant"} <= {c.recipe for c in cells if c.setting == setting}


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


def test_the_moe_matrix_compares_the_moe_methods_on_one_grid() -> None:
    cells = moe_cells()
    assert {c.model for c in cells} == {"tiny-llada2"}
    assert {c.recipe for c in cells} == {"rtn", "gptq", "dllmquant"}
    assert {"W4A16g128", "W4A16ch", "W3A16g128", "W3A16ch", "W8A8KV16ch"} <= {c.setting for c in cells}
    assert len(set(cells)) == len(cells)


def test_the_moe_matrix_runs_dllmquant_as_its_moe_variant(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """tiny-llada2 (trained, confident) under its threshold sampler skips most mask ratios; the MoE recipe's
    calibration sampler (threshold 1.0) must still fill TMAS's quotas, and the page must name the run."""
    out = tmp_path / "moe.md"
    argv = ["results", "--matrix", "moe", "--methods", "dllmquant", "--settings", "W4A16ch"]
    assert main([*argv, *SMALL, "--out", str(out)]) == 0
    text = out.read_text()
    assert "uv run dllmq results --matrix moe --methods dllmquant --settings W4A16ch" in text
    assert "## tiny-llada2" in text and "| dllmquant | W4A16ch |" in text
    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["matrix"] == "moe" and list(raw["floats"]) == ["tiny-llada2"]
    assert raw["cells"][0]["kl"] >= 0.0


def test_results_rejects_an_empty_selection(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["results", "--models", "tiny-llada", "--methods", "quant-dllm", "--settings", "W4A16"]
    assert main([*argv, "--out", str(tmp_path / "r.md")]) == 2
    assert "no cell of the matrix matches" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def _cell(recipe: str, setting: str, kl: float | None, exact: float = 0.5) -> dict:
    return {
        "model": "tiny-llada",
        "recipe": recipe,
        "setting": setting,
        "exact": exact,
        "chars": 0.9,
        "code_nll": 5.0,
        "top1": None if kl is None else 0.9,
        "kl": kl,
        "seconds": 1.0,
    }


def test_from_json_rerenders_without_running(tmp_path: Path) -> None:
    raw = {
        "command": "uv run dllmq results",
        "date": "2026-01-01",
        "machine": "test machine",
        "settings": {"problems": 7, "code_chunks": 2, "mc_num": 2, "fidelity_ratios": [0.5]},
        "seconds": 120.0,
        "floats": {"tiny-llada": _cell("float", "-", None)},
        "cells": [
            _cell("rtn", "W4A4", 0.010),
            _cell("quarot", "W4A4", 0.004),
            _cell("dllmquant", "W4A4", 0.002),
            _cell("gptq", "W2A16", 0.020),
            _cell("quant-dllm", "W2A16", 0.030),
            _cell("gptq", "W4A16", 0.001),
            _cell("dllmquant", "W4A16", 0.00105),
        ],
    }
    source = tmp_path / "raw.json"
    source.write_text(json.dumps(raw))
    out = tmp_path / "results.md"
    assert main(["results", "--from-json", str(source), "--out", str(out)]) == 0
    text = out.read_text()
    assert "Produced by `uv run dllmq results` on 2026-01-01 (test machine) in 2.0 minutes." in text
    assert "first 7 problems" in text
    # verdicts come from KL against the most faithful baseline at the same setting
    assert "W4A4: dllmquant KL 0.0020 vs the best baseline quarot 0.0040 (0.50x): **helps**" in text
    assert "W2A16: quant-dllm KL 0.0300 vs the best baseline gptq 0.0200 (1.50x): **hurts**" in text
    assert "W4A16: dllmquant KL 0.0010 vs the best baseline gptq 0.0010 (1.05x): **ties**" in text
    # exact-match grids: weight-only columns W4A16 W3A16 W2A16, activation columns W8A8 W4A8 W4A4
    assert "| dllmquant | 50.0 | n/a | n/a |" in text and "| quant-dllm | n/a | n/a | 50.0 |" in text
    assert "| quarot | n/a | n/a | 50.0 |" in text and "| awq | n/a | n/a | n/a |" in text


def _raw(model: str, seconds: float, problems: int = 7) -> dict:
    def cell(recipe: str, setting: str, kl: float | None) -> dict:
        return {**_cell(recipe, setting, kl), "model": model}

    return {
        "command": f"uv run dllmq results --models {model}",
        "date": "2026-01-01",
        "machine": "test machine, 1 threads",
        "settings": {"problems": problems, "code_chunks": 2, "mc_num": 2, "fidelity_ratios": [0.5]},
        "seconds": seconds,
        "floats": {model: cell("float", "-", None)},
        "cells": [cell("rtn", "W4A16", 0.01), cell("gptq", "W4A16", 0.002)],
    }


def test_from_json_merges_runs_made_side_by_side(tmp_path: Path) -> None:
    files = []
    for model, seconds in (("tiny-llada", 600.0), ("tiny-dream", 900.0)):
        files.append(tmp_path / f"{model}.json")
        files[-1].write_text(json.dumps(_raw(model, seconds)))
    out = tmp_path / "results.md"
    assert main(["results", "--from-json", *map(str, files), "--out", str(out)]) == 0
    text = out.read_text()
    assert (
        "Produced by `uv run dllmq results --models tiny-llada` and `uv run dllmq results --models "
        "tiny-dream`, side by side, on 2026-01-01 (test machine, 1 threads) in 15.0 minutes." in text
    )
    assert "## tiny-llada" in text and "## tiny-dream" in text


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (_raw("tiny-dream", 1.0, problems=8), "different evaluation settings"),
        (_raw("tiny-llada", 1.0), "measured by more than one run"),
    ],
)
def test_from_json_refuses_runs_that_do_not_merge(
    tmp_path: Path, capsys: pytest.CaptureFixture, second: dict, message: str
) -> None:
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    files[0].write_text(json.dumps(_raw("tiny-llada", 1.0)))
    files[1].write_text(json.dumps(second))
    out = tmp_path / "results.md"
    assert main(["results", "--from-json", *map(str, files), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()
    missing = [str(files[0]), str(tmp_path / "nope.json")]
    assert main(["results", "--from-json", *missing, "--out", str(out)]) == 2
    assert "nope.json" in capsys.readouterr().err and not out.exists()


def test_a_stopped_run_resumes_from_its_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, raw_path = tmp_path / "r.md", tmp_path / "r.json"
    base = ["results", "--models", "tiny-llada", "--methods", "rtn", *SMALL, "--out", str(out)]
    assert main([*base, "--settings", "W4A16", "--json", str(raw_path)]) == 0
    first = json.loads(raw_path.read_text())
    first["complete"] = False  # as a run stopped after its first cell leaves it
    raw_path.write_text(json.dumps(first))
    capsys.readouterr()

    assert main([*base, "--settings", "W4A16", "W8A8", "--json", str(raw_path), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "[1/2] tiny-llada rtn W4A16" in printed and "kept)" in printed.splitlines()[1]
    assert "[2/2] tiny-llada rtn W8A8" in printed and "kept)" not in printed.splitlines()[2]
    raw = json.loads(raw_path.read_text())
    assert raw["complete"] is True
    assert raw["cells"][0] == first["cells"][0] and raw["floats"] == first["floats"]
    assert [c["setting"] for c in raw["cells"]] == ["W4A16", "W8A8"]
    assert raw["seconds"] > first["seconds"]
    assert "Partial" not in out.read_text()


def test_resume_refuses_a_json_of_other_settings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw_path = tmp_path / "r.json"
    raw_path.write_text(json.dumps(_raw("tiny-llada", 1.0, problems=99) | {"matrix": "main"}))
    argv = ["results", "--models", "tiny-llada", "--methods", "rtn", "--settings", "W4A16", *SMALL]
    assert main([*argv, "--out", str(tmp_path / "r.md"), "--json", str(raw_path), "--resume"]) == 2
    assert "--resume" in capsys.readouterr().err and not (tmp_path / "r.md").exists()
