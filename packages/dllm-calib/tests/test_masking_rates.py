"""MCS and random-time masking match their analytic masking rates.

Tolerances come from the binomial standard deviation through Bernstein's inequality, which holds for any
sum of independent variables within 1 of their mean (Bernoulli draws, uniforms) and also for small,
skewed binomials where a plain "k sigma" rule is not safe:
``P(|X - mu| >= t) <= 2 exp(-t^2 / (2 (sigma^2 + t / 3)))``, solved for ``t`` at a failure probability
``DELTA`` per check.
"""

from __future__ import annotations

import math

import torch
from dllm_calib import ListSource, MCSConfig, RandomConfig, mcs_visibility
from hypothesis import given
from hypothesis import strategies as st

TEXTS = ListSource(
    [f"sample text number {i}: the quick brown fox jumps over the lazy dog" for i in range(40)]
)
DELTA = 1e-7  # false-failure probability per check


def _tolerance(variance: float) -> float:
    """Bernstein deviation bound ``t`` for a sum with the given variance (summands within 1 of their mean)."""
    log_term = math.log(2 / DELTA)
    return log_term / 3 + math.sqrt((log_term / 3) ** 2 + 2 * variance * log_term)


def _within_binomial(successes: int, trials: int, p: float) -> bool:
    if p in (0.0, 1.0):
        return successes == trials * p
    return abs(successes - trials * p) <= _tolerance(trials * p * (1 - p)) + 1e-9


@given(
    seed=st.integers(0, 10_000),
    gamma=st.floats(0.0, 0.9),
    steps=st.integers(1, 8),
    seq_len=st.integers(8, 48),
    schedule=st.sampled_from(["linear", "cosine"]),
    endpoint=st.booleans(),
)
def test_mcs_rates(char_model, seed, gamma, steps, seq_len, schedule, endpoint) -> None:
    config = MCSConfig(
        num_samples=24,
        seq_len=seq_len,
        seed=seed,
        gamma=gamma,
        num_timesteps=steps,
        schedule=schedule,
        include_fully_visible=endpoint,
    )
    cset = config.build(char_model, TEXTS)
    alphas = mcs_visibility(config)
    assert len(alphas) == steps + int(endpoint)
    assert alphas[0] == 0.0 and (alphas[-1] == 1.0) == endpoint
    assert len(cset) == 24 * len(alphas)
    prefix = math.floor(gamma * seq_len)
    counts = [0] * len(alphas)
    for i, state in enumerate(cset):
        k = i % len(alphas)  # replicate: window-major, every timestep in order
        assert state.step == k and state.source_index == i // len(alphas)
        assert math.isclose(state.t, 1 - alphas[k])
        assert not state.is_masked[:prefix].any()
        suffix = state.is_masked[prefix:]
        assert math.isclose(state.mask_ratio, float(suffix.float().mean()))
        counts[k] += int(suffix.sum())
    trials = 24 * (seq_len - prefix)
    for k, alpha in enumerate(alphas):
        assert _within_binomial(counts[k], trials, 1 - alpha), (k, counts[k], trials, 1 - alpha)


def test_mcs_cycle_assignment(char_model) -> None:
    config = MCSConfig(num_samples=10, seq_len=16, num_timesteps=4, assignment="cycle")
    cset = config.build(char_model, TEXTS)
    assert [s.step for s in cset] == [i % 4 for i in range(10)]
    assert [s.source_index for s in cset] == list(range(10))


@given(seed=st.integers(0, 10_000), seq_len=st.integers(8, 48), eps=st.sampled_from([0.0, 1e-3, 0.1]))
def test_random_rates(char_model, seed, seq_len, eps) -> None:
    n = 64
    cset = RandomConfig(num_samples=n, seq_len=seq_len, seed=seed, eps=eps).build(char_model, TEXTS)
    p = torch.tensor([s.t for s in cset], dtype=torch.float64)
    assert bool(((p >= eps - 1e-6) & (p <= 1)).all())
    # the masked count of every state is Binomial(L, p_i): sum over states, compare mean and variance
    masked = torch.tensor([int(s.is_masked.sum()) for s in cset], dtype=torch.float64)
    mean = float((seq_len * p).sum())
    assert abs(float(masked.sum()) - mean) <= _tolerance(float((seq_len * p * (1 - p)).sum())) + 1e-9
    for s in cset:
        assert math.isclose(s.mask_ratio, float(s.is_masked.float().mean()))
    # t ~ U(0, 1): p = (1 - eps) t + eps
    t = (p - eps) / (1 - eps)
    assert abs(float(t.sum()) - n / 2) <= _tolerance(n / 12)
    assert _within_binomial(int((t < 0.5).sum()), n, 0.5)
