"""Sampler speed of several models in interleaved rounds: ratios that survive a machine whose speed drifts.

On a shared or virtual machine the speed of the whole machine changes over tens of seconds (see
docs/benchmarks/cpu.md: one float baseline measured 4.75 to 6.22 ms/step in six runs of one command within
four minutes). Timing model A, then model B, folds that drift into the ratio B/A. `interleaved_speeds` keeps
every model loaded and times them in turn, round after round: each round's ratios come from calls a few
seconds apart, and their median over the rounds is the reported ratio.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from collections.abc import Sequence

from dllm_sampler import DiffusionLM

from dllm_bench.evaluation.speed import SpeedResult, sampler_speed

__all__ = ["RoundsResult", "interleaved_speeds"]


@dataclasses.dataclass(frozen=True)
class RoundsResult:
    """One model's timings over the rounds.

    Attributes:
        speed: the rounds combined: ``step_ms`` is the median of the rounds' medians, ``step_ms_min`` /
            ``step_ms_max`` the fastest / slowest call of any round, ``tokens_per_s`` follows ``step_ms``,
            ``repeats`` counts every timed call, peak memory is the largest of the rounds.
        step_ratio: the median over the rounds of this model's ``step_ms`` over the first model's in the same
            round (1.0 for the first model).
        rounds: the per-round `SpeedResult` s.
    """

    speed: SpeedResult
    step_ratio: float
    rounds: tuple[SpeedResult, ...]


def _combine(rounds: Sequence[SpeedResult]) -> SpeedResult:
    step_ms = statistics.median(r.step_ms for r in rounds)
    first = rounds[0]
    return dataclasses.replace(
        first,
        repeats=sum(r.repeats for r in rounds),
        step_ms=step_ms,
        step_ms_min=min(r.step_ms_min for r in rounds),
        step_ms_max=max(r.step_ms_max for r in rounds),
        tokens_per_s=first.tokens_per_s * first.step_ms / step_ms,
        peak_memory_bytes=max(r.peak_memory_bytes for r in rounds),
    )


def interleaved_speeds(
    models: Sequence[tuple[str, DiffusionLM]],
    rounds: int,
    *,
    batch_size: int,
    gen_length: int,
    steps: int,
    prompt_len: int,
    warmup: int,
    repeats: int,
    seed: int = 0,
) -> list[RoundsResult]:
    """Time every ``(label, model)`` with `sampler_speed` (``repeats`` calls) once per round, the models in
    turn, for ``rounds`` rounds (``warmup`` untimed calls of each model in the first round only); returns
    one `RoundsResult` per model, in order. Raises ``ValueError`` for no models or ``rounds < 1``."""
    if not models:
        raise ValueError("interleaved_speeds needs at least one model")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    per_model: list[list[SpeedResult]] = [[] for _ in models]
    for r in range(rounds):
        for (label, dlm), results in zip(models, per_model, strict=True):
            print(f"measuring {label} (round {r + 1}/{rounds}) ...", file=sys.stderr, flush=True)
            results.append(
                sampler_speed(
                    dlm,
                    batch_size,
                    gen_length,
                    steps,
                    prompt_len,
                    warmup if r == 0 else 0,
                    repeats,
                    seed=seed,
                )
            )
    base = per_model[0]
    return [
        RoundsResult(
            speed=_combine(results),
            step_ratio=statistics.median(a.step_ms / b.step_ms for a, b in zip(results, base, strict=True)),
            rounds=tuple(results),
        )
        for results in per_model
    ]
