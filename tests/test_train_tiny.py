"""tools/train_tiny.py end to end at toy size: it trains, monitors, and writes a checkpoint `load` reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dllm_sampler import load
from dllm_sampler.tasks import ANSWER_TOKENS

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "train_tiny.py"
TOY = ["--hidden", "128", "--layers", "1", "--mlp", "96", "--batch", "4", "--aux-batch", "4"]
TOY += ["--code-batch", "2", "--code-every", "2", "--steps", "4", "--eval-every", "3", "--log-every", "1"]


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_trains_monitors_and_saves_a_loadable_checkpoint(tmp_path, arch):
    out = tmp_path / f"toy-{arch}"
    done = subprocess.run(
        [sys.executable, SCRIPT, "--arch", arch, "--out", out, *TOY], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    events = [r.get("event") for r in records]
    assert events[0] == "start" and events[-1] == "done"
    assert [r["step"] for r in records if r.get("event") == "eval"] == [3, 4]  # every 3 steps and the last
    assert records[-1]["steps"] == 4
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 4 and all(loss == loss and loss > 0 for loss in losses)
    monitor = next(r for r in records if r.get("event") == "eval")
    assert set(monitor["teacher_forced"]) == {"c1", "r", "c2", "f"} and 0 <= monitor["accuracy"] <= 1
    dlm = load(out)
    assert dlm.arch == arch and dlm.dtype == torch.bfloat16
    assert dlm.config.dims().hidden_size == 128
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["steps"] == ANSWER_TOKENS + 1
