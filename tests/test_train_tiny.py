"""tools/train_tiny.py end to end at toy size: it trains, monitors, and writes a checkpoint `load` reads."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dllm_sampler import load
from dllm_sampler.tasks import ANSWER_TOKENS, answer_parts, format_answer, heldout_problems
from hypothesis import given, settings
from hypothesis import strategies as st

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "train_tiny.py"
TOY = ["--hidden", "128", "--layers", "1", "--mlp", "96", "--batch", "4", "--aux-batch", "4"]
TOY += ["--code-batch", "2", "--code-every", "2", "--steps", "4", "--eval-every", "3", "--log-every", "1"]


def _script():
    if str(SCRIPT.parent) not in sys.path:  # train_tiny imports its sibling tools/tiny_llada2.py
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("train_tiny", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_tiny = _script()


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
    # options not given come from the layout's RECIPES entry, so the bare command is the shipped recipe
    recipe = {key: str(value) for key, value in train_tiny.RECIPES[arch].items() if key != "steps"}
    assert {key: records[0]["args"][key] for key in recipe} == recipe
    assert (tmp_path / f"toy-{arch}-ema" / "model.safetensors").is_file()
    assert [r["step"] for r in records if r.get("event") == "eval"] == [3, 4]  # every 3 steps and the last
    assert records[-1]["steps"] == 4
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 4 and all(loss == loss and loss > 0 for loss in losses)
    monitor = next(r for r in records if r.get("event") == "eval")
    assert set(monitor["teacher_forced"]) == {"c1", "r", "c2", "f"} and 0 <= monitor["accuracy"] <= 1
    assert set(monitor["copies"]) == {"a", "b", "c"}
    assert all(len(places) == 4 and all(0 <= x <= 1 for x in places) for places in monitor["copies"].values())
    dlm = load(out)
    assert dlm.arch == arch and dlm.dtype == torch.bfloat16
    assert dlm.config.dims().hidden_size == 128
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["steps"] == ANSWER_TOKENS + 1


def test_ema_checkpoint_is_written_beside_the_raw_one(tmp_path):
    out = tmp_path / "toy"
    args = [*TOY, "--copy-weight", "3", "--ema", "0.5"]
    done = subprocess.run(
        [sys.executable, SCRIPT, "--arch", "llada", "--out", out, *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    raw, ema = load(out), load(tmp_path / "toy-ema")
    assert (tmp_path / "toy-ema" / "train_log.jsonl").is_file()
    assert ema.dtype == torch.bfloat16 and ema.config == raw.config
    differ = [k for k, v in raw.model.state_dict().items() if not torch.equal(v, ema.model.state_dict()[k])]
    assert differ, "the averaged weights equal the last ones: the average was not saved"


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.1, 10.0))
def test_weighted_masked_loss(seed, scale):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, 7, generator=g)
    x0 = torch.randint(0, 7, (3, 5), generator=g)
    masked = torch.rand(3, 5, generator=g) < 0.6
    masked[0, 0] = True
    plain = torch.nn.functional.cross_entropy(logits[masked], x0[masked])
    assert torch.allclose(train_tiny.masked_mean_loss(logits, x0, masked), plain)
    ones = torch.ones(3, 5)
    assert torch.allclose(train_tiny.masked_mean_loss(logits, x0, masked, ones * scale), plain)
    weight = train_tiny.copy_weights(x0, [1, 3], 4.0)
    assert weight[:, [1, 3]].eq(4.0).all() and weight[:, [0, 2, 4]].eq(1.0).all()
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x0, reduction="none")
    want = (ce * weight * masked).sum() / (weight * masked).sum()
    assert torch.allclose(train_tiny.masked_mean_loss(logits, x0, masked, weight), want)


def test_weight_average_follows_its_decay():
    model = torch.nn.Linear(2, 2, bias=False)
    torch.nn.init.zeros_(model.weight)
    average = train_tiny.WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average.update(model)  # warm-up decay min(0.5, 1/10): 0.1 * 0 + 0.9 * 1
    assert torch.allclose(average.shadow["weight"], torch.full((2, 2), 0.9))
    for _ in range(20):
        average.update(model)  # decay 0.5 from here on
    assert torch.allclose(average.shadow["weight"], torch.ones(2, 2), atol=1e-5)
    with torch.no_grad():
        model.weight.fill_(3.0)
    average.update(model)
    assert torch.allclose(average.shadow["weight"], torch.full((2, 2), 2.0), atol=1e-5)
    average.copy_to(model)
    assert torch.allclose(model.weight, torch.full((2, 2), 2.0), atol=1e-5)


@pytest.mark.parametrize(("flag", "value"), [("--ema", "1.0"), ("--ema", "-0.1"), ("--copy-weight", "0")])
def test_bad_average_or_copy_weight_is_refused(tmp_path, flag, value):
    out = tmp_path / "never"
    done = subprocess.run(
        [sys.executable, SCRIPT, "--arch", "llada", "--out", out, flag, value], capture_output=True, text=True
    )
    assert done.returncode == 2 and flag in done.stderr
    assert not out.exists()


def test_step_schedule_is_repeatable(tmp_path):
    """With --schedule steps the LR follows step / steps alone, so two runs with one seed log the same
    learning rates and losses."""
    logs = []
    for run in ("one", "two"):
        out = tmp_path / run
        args = [*TOY, "--schedule", "steps", "--warmup", "1", "--eval-every", "100", "--threads", "1"]
        done = subprocess.run(
            [sys.executable, SCRIPT, "--arch", "dream", "--out", out, *args], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        logs.append([(r["step"], r["lr"], r["loss"]) for r in records if "loss" in r])
    assert logs[0] == logs[1] and len(logs[0]) == 4
    for step, lr, _ in logs[0]:
        assert lr == round(train_tiny.learning_rate(step / 4, step, 1e-3, 1), 6)


def test_operand_copy_accuracy_finds_the_miscopied_place():
    problems = heldout_problems(8)
    texts = [format_answer(p) for p in problems]
    assert train_tiny.operand_copy_accuracy(texts, problems) == {name: [1.0] * 4 for name in "abc"}
    tens_of_b = answer_parts()["b"][1]
    wrong = [t[:tens_of_b] + str((int(t[tens_of_b]) + 1) % 10) + t[tens_of_b + 1 :] for t in texts[:2]]
    copies = train_tiny.operand_copy_accuracy(wrong + texts[2:], problems)
    assert copies["b"] == [1.0, 0.75, 1.0, 1.0] and copies["a"] == copies["c"] == [1.0] * 4
