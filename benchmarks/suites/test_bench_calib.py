"""Cost of collecting every block Linear's Hessian on tiny-llada, relative to plain forward passes.

Run with ``uv run pytest benchmarks/suites/test_bench_calib.py --benchmark-enable -s`` (the root config
disables benchmarks and does not collect this folder by default). The calibration set is 128 random-time
masked states (``RandomConfig``) cut from the repository's arithmetic text. The baseline is the same
states through ``model.logits`` in the same batches; the measured run is ``dllm_calib.collect`` with a
``HessianCollector`` on every block Linear (``model.topology.linear_names()``), once with uniform weights
and once with CGQ's certainty weights. Goal: ratio <= 3x. The ratio is printed (and stored in the benchmark's
``extra_info``), never asserted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch
from dllm_calib import (
    ArithmeticSource,
    CalibrationSet,
    CertaintyWeight,
    HessianCollector,
    ModelFeed,
    RandomConfig,
    collect,
    iter_batches,
    score_confidence,
)
from dllm_sampler import available_models, load

NUM_STATES = 128
SEQ_LEN = 128
BATCH_SIZE = 16
REPEATS = 3
GOAL = 3.0


@pytest.fixture(scope="module")
def model():
    if "tiny-llada" not in available_models():
        pytest.skip("the tiny-llada checkpoint is not shipped yet (dllm_sampler.available_models() lacks it)")
    return load("tiny-llada")


@pytest.fixture(scope="module")
def states(model) -> CalibrationSet:
    seq_len = min(SEQ_LEN, getattr(model.config, "max_sequence_length", SEQ_LEN))
    cset = RandomConfig(num_samples=NUM_STATES, seq_len=seq_len, seed=0).build(
        model, ArithmeticSource(with_answers=True)
    )
    return score_confidence(model, cset, batch_size=BATCH_SIZE)


def _best_of(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("weighting", ["uniform", "certainty"])
def test_hessian_collection_cost(benchmark, model, states, weighting) -> None:
    pad = model.pad_token_id

    @torch.no_grad()
    def forwards() -> None:
        for batch in iter_batches(states, BATCH_SIZE, model.device, pad_token_id=pad):
            model.logits(batch.input_ids, batch.model_attention_mask)

    def collect_all() -> dict:
        w = CertaintyWeight() if weighting == "certainty" else None
        return collect(
            ModelFeed(model, states, BATCH_SIZE), model.topology.linear_names(), [HessianCollector(w)]
        )

    forwards()  # warm up
    baseline = _best_of(forwards)
    measured = _best_of(collect_all)
    result = benchmark.pedantic(collect_all, rounds=1, iterations=1)
    assert len(result["hessian"]) == len(model.topology.linear_names())
    ratio = measured / baseline
    benchmark.extra_info.update({"ratio_to_forward": ratio, "forward_s": baseline, "collect_s": measured})
    verdict = "meets" if ratio <= GOAL else "MISSES"
    print(
        f"\n[calib] tiny-llada, {NUM_STATES} states, {len(model.topology.linear_names())} Linears, "
        f"{weighting} weights: forward {baseline * 1e3:.1f} ms, collect {measured * 1e3:.1f} ms, "
        f"ratio {ratio:.2f}x ({verdict} the <= {GOAL:.0f}x goal)"
    )
