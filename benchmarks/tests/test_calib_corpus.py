"""Calibration corpora in recipes and ``dllmq quantize --calib``: the presets name their paper's corpus
and shape, ``--calib NAME=PATH`` switches to a local copy, the shipped text stays the offline default, and
the printed output says which corpus was used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dllm_bench.cli import main
from dllm_bench.recipes import CalibrationSpec, Recipe, load_recipe
from dllm_sampler import save
from dllm_sampler.testing import random_char_model

PAPER = {
    "qdlm-gptq": ("wikitext2", 128, 2048),
    "qdlm-smoothquant": ("wikitext2", 128, 2048),
    "qdlm-duquant": ("wikitext2", 128, 2048),
    "qdlm-quarot": ("wikitext2", 128, 4096),
    "qdlm-awq": ("pile", 128, 512),
    "quant-dllm-paper": ("c4", 128, 4096),
    "quant-dllm-paper-dream": ("c4", 128, 4096),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_presets_name_their_papers_corpus_and_keep_the_shipped_default(name) -> None:
    calib = load_recipe(name).calibration
    paper = calib.paper_corpus
    assert paper is not None and (paper.name, paper.num_samples, paper.seq_len) == PAPER[name]
    assert calib.source == "arithmetic" and not calib.uses_corpus
    assert f"--calib {paper.name}=PATH" in calib.summary() and "shipped 'arithmetic'" in calib.summary()
    switched = load_recipe(name).with_calibration_corpus(paper.name, "/data/corpus").calibration
    assert switched.uses_corpus and switched.corpus == paper.name and switched.source == "/data/corpus"
    assert (switched.params["num_samples"], switched.params["seq_len"]) == PAPER[name][1:]
    assert switched.summary().startswith(f"calibration: {paper.name} (")


def test_corpus_fields_are_validated() -> None:
    with pytest.raises(ValueError, match="'wiki' is not a known corpus"):
        CalibrationSpec(source="/data/x.txt", corpus="wiki")
    with pytest.raises(ValueError, match="source is the shipped 'arithmetic'"):
        CalibrationSpec(corpus="wikitext2")
    with pytest.raises(ValueError, match="does not cut windows"):
        CalibrationSpec(builder="tmas", paper_corpus={"name": "c4", "num_samples": 8, "seq_len": 64})
    with pytest.raises(ValueError, match="a corpus applies to builders only"):
        CalibrationSpec(path="set").with_corpus("c4", "/data/c4")
    with pytest.raises(ValueError, match="is a shipped source"):
        CalibrationSpec().with_corpus("c4", "code")
    plain = load_recipe("gptq").with_calibration_corpus(None, "/data/docs.jsonl", field="content")
    assert plain.calibration.params["seq_len"] == 128  # no paper_corpus: the recipe's own shape
    assert plain.calibration.field == "content" and plain.calibration.corpus is None
    again = Recipe.from_yaml(plain.to_yaml())
    assert again.calibration == plain.calibration


def _recipe(tmp_path: Path) -> Path:
    text = load_recipe("gptq").to_yaml()
    data = Recipe.from_yaml(text).to_dict()
    data["calibration"] = {
        "builder": "plain",
        "params": {"num_samples": 2, "seq_len": 8},
        "source": "arithmetic",
        "paper_corpus": {"name": "wikitext2", "num_samples": 4, "seq_len": 16},
    }
    data["scheme"] = {"weights": {"bits": 8, "group_size": 16}, "activations": 16}
    path = tmp_path / "tiny-gptq.yaml"
    path.write_text(Recipe.model_validate(data).to_yaml())
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "model"
    save(random_char_model("llada"), path)
    return path


def test_quantize_with_a_local_corpus_says_which_it_used(model_dir, tmp_path, capsys) -> None:
    corpus = tmp_path / "wikitext-2-raw-v1"
    corpus.mkdir()
    rows = ["", " = Article = \n", ""] + [f" line {i} of the article , with words \n" for i in range(40)]
    (corpus / "train.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    (corpus / "test.jsonl").write_text(json.dumps({"text": "held out"}) + "\n")
    argv = ["quantize", "--model", str(model_dir), "--recipe", str(_recipe(tmp_path)), "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "q"), "--calib", f"wikitext2={corpus}"]) == 0
    printed = capsys.readouterr().out
    assert f"calibration: wikitext2 (WikiText-2 (raw), train split) at {corpus}" in printed
    assert "4 windows x 16 tokens" in printed

    assert main([*argv, "--out", str(tmp_path / "d")]) == 0  # no --calib: the shipped text, offline
    printed = capsys.readouterr().out
    assert "the shipped 'arithmetic' text" in printed and "pass --calib wikitext2=PATH" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--calib", "wikitext2=/no/such/corpus"], "/no/such/corpus does not exist"),
        (["--calib", "wiki=."], "unknown corpus 'wiki'"),
        (["--calib-field", "content"], "pass --calib too"),
    ],
)
def test_bad_calib_arguments_are_one_line_errors(model_dir, tmp_path, capsys, extra, message) -> None:
    argv = ["quantize", "--model", str(model_dir), "--recipe", "gptq", "--out", str(tmp_path / "q"), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
