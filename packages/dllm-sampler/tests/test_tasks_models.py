"""The shipped tiny models load by name, have the documented shapes and answer held-out problems.

Skipped (with the reason shown) only while ``src/dllm_sampler/assets/<name>`` does not exist yet.
"""

from __future__ import annotations

import pytest
import torch
from dllm_sampler import load
from dllm_sampler.registry import available_models, resolve
from dllm_sampler.tasks import heldout_problems, solve

# Correct answers required out of the first 10 held-out problems with the default sampler. Keep these well
# below the accuracy measured on heldout_problems(500) (docs/tiny_models.md) so the test is not flaky; a
# broken model (wrong layout, lost Dream shift, scrambled weights) answers ~0 of 10.
MIN_CORRECT = {"tiny-llada": 6, "tiny-dream": 5}


@pytest.fixture(scope="module", params=sorted(MIN_CORRECT))
def name(request):
    if request.param not in available_models():
        pytest.skip(f"{request.param} is not shipped yet (train it with tools/train_tiny.py)")
    return request.param


def test_shapes_and_storage(name):
    dlm = load(name)
    d = dlm.config.dims()
    assert (d.hidden_size, d.num_layers, d.intermediate_size, d.head_dim) == (256, 4, 768, 64)
    assert d.num_kv_heads == (4 if name == "tiny-llada" else 2)
    assert dlm.arch == name.removeprefix("tiny-")
    assert dlm.dtype in (torch.bfloat16, torch.float16)
    assert dlm.mask_token_id == dlm.tokenizer.token_to_id("<|mdm_mask|>") != dlm.pad_token_id
    sizes = [f.stat().st_size for f in resolve(name).glob("*.safetensors")]
    assert sizes and sum(sizes) <= 16 * 2**20


def test_answers_heldout_problems(name):
    dlm = load(name, dtype=torch.float32)
    problems = heldout_problems(10)
    answers = solve(dlm, problems)
    correct = sum(a == p.answer for a, p in zip(answers, problems, strict=True))
    assert correct >= MIN_CORRECT[name], (correct, answers, [p.answer for p in problems])
