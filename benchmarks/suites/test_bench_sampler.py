"""Sampler speed of the shipped tiny models: ms per denoising step and generated tokens per second.

Run with ``uv run pytest benchmarks/suites/test_bench_sampler.py --benchmark-enable -s`` (the root config
disables benchmarks and does not collect this folder by default). Each case is one real ``generate`` call
with the model's evaluation sampler (`answer_generation_config`: LLaDA low-confidence remasking in one
block, Dream ``entropy``; greedy; one step per answer token) on the first ``batch`` held-out arithmetic
prompts, in the stored bf16 and in float32. ms per step is the median call's wall time divided by the
sampler's steps; tokens/s counts every generated token of the batch. Both are printed and stored in the
benchmark's ``extra_info``, never asserted.
"""

from __future__ import annotations

import pytest
import torch
from dllm_sampler import available_models, generate, load
from dllm_sampler.tasks import answer_generation_config, generation_prompts, heldout_problems

ROUNDS = 5


@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_sampler_speed(benchmark, name: str, dtype: str, batch: int) -> None:
    if name not in available_models():
        pytest.skip(f"{name} is not shipped (dllm_sampler.available_models() lacks it)")
    dlm = load(name, dtype=dtype)
    prompt, mask = generation_prompts(dlm.tokenizer, heldout_problems(batch))
    config = answer_generation_config(dlm.arch)
    out = benchmark.pedantic(generate, args=(dlm, prompt, mask, config), rounds=ROUNDS, warmup_rounds=1)
    generated = out.shape[1] - prompt.shape[1]
    assert out.shape[0] == batch and generated == config.steps  # one step per generated token
    assert torch.equal(out[:, : prompt.shape[1]], prompt)  # the prompt is never rewritten
    if benchmark.stats is None:  # --benchmark-disable: the call ran once, untimed
        return
    seconds = benchmark.stats.stats.median
    step_ms = 1000 * seconds / config.steps
    tokens_per_s = batch * generated / seconds
    benchmark.extra_info.update(
        {"step_ms": step_ms, "tokens_per_s": tokens_per_s, "threads": torch.get_num_threads()}
    )
    print(
        f"\n[sampler] {name} {dtype} batch {batch}: {step_ms:.2f} ms/step, {tokens_per_s:.0f} tokens/s "
        f"({config.steps} steps, {torch.get_num_threads()} threads)"
    )
