"""tools/train_tiny.py --arch llada2: the block-diffusion batch (tools/tiny_llada2.py) shows each noisy
block what the block sampler shows it, the expert-bias balancing moves toward even loads, and a toy run
checkpoints, resumes and saves a model whose default sampler is block diffusion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dllm_sampler import load
from dllm_sampler.models.llada2 import block_causal_mask
from dllm_sampler.testing import random_llada2

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))
from tiny_llada2 import ExpertBalance, block_diffusion_batch, block_diffusion_mask  # noqa: E402

SCRIPT = TOOLS / "train_tiny.py"
TOY = ["--hidden", "128", "--layers", "2", "--mlp", "96", "--batch", "4", "--code-batch", "2"]
TOY += ["--code-every", "2", "--eval-every", "3", "--log-every", "1", "--threads", "1"]
IDS = {"pad": 45, "eos": 46, "mask": 47}


def test_mask_blocks():
    """Clean block 0..2 then noisy blocks 1..2 (block ids per column)."""
    clean, noisy = torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 2, 2])
    allowed = block_diffusion_mask(clean, noisy).int()
    assert allowed.tolist() == [
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 1, 1, 0, 0],  # noisy block 1: clean block 0 and itself
        [1, 1, 0, 0, 1, 1, 0, 0],
        [1, 1, 1, 1, 0, 0, 1, 1],  # noisy block 2: clean blocks 0-1 and itself
        [1, 1, 1, 1, 0, 0, 1, 1],
    ]


@pytest.mark.parametrize("shift", [0, 3])
def test_noisy_block_logits_equal_the_samplers_view(shift):
    """Each noisy block's logits in the batched forward equal a plain block-causal forward of the clean
    earlier blocks followed by that noisy block, as `generate_block` runs it (left padding included)."""
    torch.manual_seed(0)
    dlm = random_llada2(seed=1)
    block, b, n = 4, 2, 10
    x0 = torch.randint(0, 40, (b, n))
    x0[0, :2] = IDS["pad"]
    attention = torch.ones(b, n, dtype=torch.long)
    attention[0, :2] = 0
    given = torch.zeros(b, n, dtype=torch.bool)
    given[:, :4] = True
    batch = block_diffusion_batch(x0, given, attention, IDS, block, shift, torch.Generator().manual_seed(0))
    assert batch.masked.any() and not (batch.masked & (batch.target == IDS["pad"])).any()
    with torch.no_grad():
        logits = dlm.model(batch.input_ids, allowed=batch.allowed, positions=batch.positions)
    total = batch.input_ids.shape[1] - batch.target.shape[1] + block
    nb, lc = total // block, batch.clean_length
    first = nb - batch.target.shape[1] // block
    noisy = batch.input_ids[:, lc:]
    clean = batch.input_ids[:, :lc]
    valid = torch.cat([torch.zeros(b, shift, dtype=torch.long), attention], 1)
    valid = torch.cat([valid, torch.ones(b, total - valid.shape[1], dtype=torch.long)], 1)
    for blk in range(first, nb):
        seq = torch.cat(
            [clean[:, : blk * block], noisy[:, (blk - first) * block : (blk - first + 1) * block]], 1
        )
        m = valid[:, : seq.shape[1]]
        with torch.no_grad():
            want = dlm.model(seq, m, allowed=block_causal_mask(seq.shape[1], block))[:, -block:]
        got = logits[:, lc + (blk - first) * block : lc + (blk - first + 1) * block]
        real = m[:, -block:].bool()
        torch.testing.assert_close(got[real], want[real], rtol=1e-5, atol=1e-5)


def test_expert_balance_moves_bias_toward_even_loads():
    dlm = random_llada2(seed=0)
    balance = ExpertBalance(dlm.model, rate=0.1)
    gate = next(iter(balance.routers.values()))
    layer = next(iter(balance.counts))
    with torch.enable_grad():
        dlm.model(torch.randint(0, 40, (2, 16)))
    load_ = balance.counts[layer].clone()
    assert load_.sum() == 2 * 16 * gate.moe.top_k
    before = gate.expert_bias.clone()
    balance.update()
    step = gate.expert_bias - before
    torch.testing.assert_close(step, 0.1 * torch.sign(load_.mean() - load_))
    assert sum(balance.report()[layer]) == pytest.approx(len(load_))
    with torch.no_grad():
        dlm.model(torch.randint(0, 40, (2, 16)))  # evaluation forwards are not counted
    assert balance.counts[layer].sum() == 0


def test_toy_run_checkpoints_resumes_and_ships_a_block_sampler(tmp_path):
    out = tmp_path / "toy"
    run = [sys.executable, SCRIPT, "--arch", "llada2", "--out", out, *TOY, "--checkpoint-every", "2"]
    first = subprocess.run([*run, "--steps", "2"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (tmp_path / "toy.resume.pt").is_file()
    second = subprocess.run([*run, "--steps", "4", "--resume"], capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert {"event": "resume", "step": 2} in records
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [0, 1, 2, 3]
    assert all(set(r["expert_load"]) == {"model.layers.1.mlp"} for r in records if "loss" in r)
    dlm = load(out)
    assert dlm.arch == "llada2"
    moe = dlm.config.moe()
    assert (moe.num_experts, moe.top_k, moe.n_group, moe.topk_group, moe.moe_layers) == (8, 2, 4, 2, (1,))
    assert moe.qk_norm and moe.rope_dim == 32 and moe.shared_intermediate_size == 16
    assert dlm.model.model.layers[1].mlp.gate.expert_bias.abs().sum() > 0
    generation = json.loads((out / "generation_config.json").read_text())
    assert (generation["block_length"], generation["steps"], generation["algorithm"]) == (32, 32, "threshold")
