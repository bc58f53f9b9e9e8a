"""``dllmq quantize`` end to end on a saved random model, then ``dllmq generate`` on its output."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from dllm_actquant import ActQuantLinear, OnlineRotation
from dllm_bench.cli import main
from dllm_bench.loading import is_quantized_folder, load_any
from dllm_sampler import save
from dllm_sampler.testing import random_char_model
from dllm_weightquant import QuantLinear


def _save_model(path: Path, task: str | None) -> Path:
    dlm = random_char_model("llada")
    defaults = {"steps": 4, "gen_length": 4, "block_length": 4, "dllmq_prompt_template": "{prompt}\nA:"}
    dlm.tokenizer_files["generation_config.json"] = {**defaults, **({"dllmq_task": task} if task else {})}
    save(dlm, path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_model(tmp_path_factory.mktemp("cli") / "model", task=None)


def _quantize(model: Path, out: Path, *extra: str) -> int:
    argv = ["quantize", "--model", str(model), "--out", str(out), "--calib-samples", "4", "--no-progress"]
    return main([*argv, *extra])


def test_quantize_then_generate_on_the_output(model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "q"
    assert _quantize(model_dir, out, "--recipe", "gptq", "--scheme", "W8A16g16") == 0
    printed = capsys.readouterr().out
    assert "recipe 'gptq' at W8A16g16" in printed and str(out) in printed
    assert "held-out arithmetic" not in printed  # the model was not trained on the task
    assert is_quantized_folder(out) and not is_quantized_folder(model_dir)
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"] == 8
    with open(out / "quant_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert (
        len(rows) == 14
        and {r["method"] for r in rows} == {"gptq"}
        and all(float(r["loss"]) >= 0 for r in rows)
    )
    assert not out.with_name("q.work").exists()  # the work folder is removed after success

    loaded = load_any(out)
    assert all(isinstance(loaded.model.get_submodule(n), QuantLinear) for n in loaded.topology.linear_names())
    assert main(["generate", "--model", str(out), "--prompt", "12+3", "--no-progress"]) == 0
    generated = capsys.readouterr().out
    assert generated.endswith("\n") and "<|mdm_mask|>" not in generated


def test_activation_recipe_round_trips_through_generate(model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "q"
    assert _quantize(model_dir, out, "--recipe", "quarot", "--scheme", "W8A8") == 0
    down = load_any(out).topology.block(0).names["down"]
    module = load_any(out).model.get_submodule(down)
    assert isinstance(module, OnlineRotation) and isinstance(module.inner, ActQuantLinear)
    capsys.readouterr()
    assert main(["generate", "--model", str(out), "--prompt", "12+3", "--no-progress"]) == 0


def test_models_trained_on_arithmetic_get_float_vs_quantized_scores(tmp_path, capsys) -> None:
    model = _save_model(tmp_path / "model", task="arithmetic")
    argv = ["--recipe", "rtn", "--scheme", "W4A16g16", "--eval-problems", "3"]
    assert _quantize(model, tmp_path / "q", *argv) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if "held-out arithmetic, 3 problems" in line)
    assert lines[header + 1].split() == ["exact", "answer", "chars", "same", "as", "float"]
    assert lines[header + 2].split()[0] == "float" and lines[header + 2].split()[-1] == "-"
    assert lines[header + 3].split()[:3] == ["quantized", "(rtn", "W4A16g16)"]
    assert lines[header + 3].rstrip().endswith("%")


def test_errors_are_reported_not_raised(model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "q"
    assert _quantize(model_dir, out, "--recipe", "rtn", "--scheme", "W4A16g16") == 0
    capsys.readouterr()
    assert _quantize(model_dir, out, "--recipe", "rtn", "--scheme", "W4A16g16") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _quantize(model_dir, tmp_path / "x", "--recipe", "no-such-recipe") == 2
    assert "shipped recipes" in capsys.readouterr().err
    assert _quantize(model_dir, tmp_path / "x", "--recipe", "rtn", "--scheme", "W5A16") == 2
    assert "W<weight bits>A<activation bits>" in capsys.readouterr().err
    assert _quantize(model_dir, tmp_path / "x", "--recipe", "rtn") == 2  # g128 does not divide 32
    assert "does not divide the input width" in capsys.readouterr().err
    assert _quantize(model_dir, tmp_path / "x", "--device", "gpu0") == 2
    assert "not a torch device" in capsys.readouterr().err


def test_overwrite_refuses_a_folder_that_is_not_a_checkpoint(model_dir, tmp_path, capsys) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "results.txt").write_text("keep me")
    assert _quantize(model_dir, notes, "--recipe", "rtn", "--scheme", "W4A16g16", "--overwrite") == 2
    printed = capsys.readouterr()
    assert "is not a checkpoint folder (it has no config.json)" in printed.err
    assert "quantizing" not in printed.out and not (tmp_path / "notes.work").exists()  # refused up front
    assert [p.name for p in notes.iterdir()] == ["results.txt"]
    assert (notes / "results.txt").read_text() == "keep me"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
