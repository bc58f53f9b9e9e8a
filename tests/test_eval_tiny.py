"""tools/eval_tiny.py --from-json: the results section rendered from saved evaluations, and its checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dllm_sampler.tasks import ANSWER_PARTS

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "eval_tiny.py"


def _record(model: str, n: int) -> dict:
    by = {"easy": [n // 2, n // 2], "medium": [n // 4, n - n // 2]}
    parts = {name: [1.0, 0.9, 0.5 if name == "f" else 1.0, 1.0] for name in ANSWER_PARTS}
    return {
        "model": model,
        "arch": "llada",
        "params": 1234,
        "n": n,
        "float32": {"accuracy": 0.75, "by_difficulty": by, "parts": parts},
        "bfloat16": {"accuracy": 0.7, "by_difficulty": by},
        "code_nll": 5.5,
        "code_chunks": 64,
        "mc_num": 32,
        "curve": [[500, 0.25, 0.8]],
        "train": {"args": {"threads": "2", "batch": "32"}},
        "done": {"steps": 600, "elapsed_s": 100.0},
        "steps_per_s": 6.0,
    }


def _run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True)


def test_from_json_renders_every_model_and_answer_part(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# head\n<!-- results -->\nold results\n")
    files = []
    for model in ("tiny-a", "tiny-b"):
        files.append(tmp_path / f"{model}.json")
        files[-1].write_text(json.dumps([_record(model, 40)]))
    done = _run("--from-json", *files, "--n", "40", "--doc", doc)
    assert done.returncode == 0, done.stderr
    text = doc.read_text()
    assert text.startswith("# head\n<!-- results -->\n") and "old results" not in text
    assert f"| model | {' | '.join(ANSWER_PARTS)} |" in text
    for model in ("tiny-a", "tiny-b"):
        assert (
            f"| {model} | llada | 1,234 | 75.0% | 70.0% | 100.0% (20/20) | 50.0% (10/20) | - | 5.500 |"
            in text
        )
        assert f"| {model} | 100 90 100 100 | " in text and "| 100 90 50 100 |" in text


def test_from_json_rejects_a_missing_file_and_another_n(tmp_path):
    saved = tmp_path / "one.json"
    saved.write_text(json.dumps([_record("tiny-a", 40)]))
    missing = _run("--from-json", saved, tmp_path / "nope.json", "--doc", tmp_path / "d.md")
    assert missing.returncode == 2 and "nope.json" in missing.stderr
    other_n = _run("--from-json", saved, "--doc", tmp_path / "d.md")  # --n defaults to 500
    assert other_n.returncode == 2 and "evaluated on 40 problems, not --n 500" in other_n.stderr
