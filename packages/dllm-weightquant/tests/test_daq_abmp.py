"""DAQ (multi-binary with DOR/RSR) and ABMP (blockwise mixed precision)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
from dllm_kernels import QuantSpec
from dllm_weightquant import (
    ABMPConfig,
    DAQConfig,
    MultiBinaryWeight,
    abmp_orders,
    abmp_quantize,
    daq_quantize,
    dor_weights,
    fit_multibinary,
    layer_objective,
)
from dllm_weightquant.daq import weighted_error
from dllm_weightquant.multibinary import combine_planes, pack_signs, unpack_signs
from hypothesis import given
from hypothesis import strategies as st

Layer = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _target(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(24, 32, generator=g, dtype=torch.float64) * torch.rand(
        24, 1, generator=g, dtype=torch.float64
    )
    lam2 = torch.where(torch.rand(24, 32, generator=g) < 0.1, 4.0, 1.0).double()
    return t, lam2


@given(seed=st.integers(0, 2**31 - 1), order=st.integers(1, 4))
def test_rsr_error_never_increases_with_iterations(seed: int, order: int) -> None:
    t, lam2 = _target(seed)
    errors = [weighted_error(t, lam2, *fit_multibinary(t, lam2, order, it)) for it in range(5)]
    for before, after in itertools.pairwise(errors):
        assert after <= before * (1 + 1e-12)
    if order > 1:
        assert errors[-1] < errors[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_falls_with_order(seed: int) -> None:
    t, lam2 = _target(seed)
    errors = [weighted_error(t, lam2, *fit_multibinary(t, lam2, k, 10)) for k in (1, 2, 3, 4)]
    assert errors == sorted(errors, reverse=True) and len(set(errors)) == 4
    assert errors[-1] < 0.1 * errors[0]


@given(seed=st.integers(0, 2**31 - 1), order=st.integers(1, 3))
def test_greedy_fit_never_worse_than_fewer_planes(seed: int, order: int) -> None:
    t, lam2 = _target(seed)
    assert weighted_error(t, lam2, *fit_multibinary(t, lam2, order + 1, 0)) <= weighted_error(
        t, lam2, *fit_multibinary(t, lam2, order, 0)
    ) * (1 + 1e-12)


def test_layer_error_falls_with_bits_and_iterations(layer: Layer) -> None:
    w, _, h = layer(16, 64, 3)
    errs = {
        (b, it): layer_objective(
            w, daq_quantize(w, h, QuantSpec(b, True, "group", 32), DAQConfig(iterations=it)).dequantize(), h
        )
        for b in (2, 3, 4)
        for it in (0, 10)
    }
    assert errs[(2, 10)] > errs[(3, 10)] > errs[(4, 10)]
    for b in (2, 3, 4):
        assert errs[(b, 10)] < errs[(b, 0)]


def test_compensation_lowers_the_layer_objective(layer: Layer) -> None:
    w, _, h = layer(32, 128, 4)
    spec = QuantSpec(2, True, "group", 32)
    on = layer_objective(w, daq_quantize(w, h, spec).dequantize(), h)
    off = layer_objective(w, daq_quantize(w, h, spec, DAQConfig(compensate=False)).dequantize(), h)
    assert on < 0.9 * off


def test_dor_marks_three_sigma_entries() -> None:
    z = torch.ones(10, 20, dtype=torch.float64)
    z[2, 3] = 1000.0  # outlier in group 0
    z[5, 15] = 1000.0  # outlier in group 1
    lam = dor_weights(z, 10, 2.0, 3.0)
    expected = torch.ones_like(z)
    expected[2, 3] = expected[5, 15] = 2.0
    assert torch.equal(lam, expected)
    assert torch.equal(dor_weights(torch.ones(4, 8, dtype=torch.float64), 4, 2.0, 3.0), torch.ones(4, 8))


def test_multibinary_weight_layout(layer: Layer) -> None:
    w, _, h = layer(8, 64, 5)
    q = daq_quantize(w, h, QuantSpec(3, True, "group", 32))
    assert isinstance(q, MultiBinaryWeight)
    assert q.planes.shape == (6, 8, 1) and q.alpha_r.shape == (6, 8) and q.alpha_c.shape == (6, 32)
    assert q.orders.tolist() == [3, 3] and q.bits_per_weight == 3.0
    first = combine_planes(unpack_signs(q.planes[:3], 32), q.alpha_r[:3], q.alpha_c[:3])
    assert torch.equal(q.dequantize()[:, :32], first)


@given(n=st.integers(1, 70), seed=st.integers(0, 2**31 - 1))
def test_sign_packing_round_trip(n: int, seed: int) -> None:
    bits = torch.rand(3, n, generator=torch.Generator().manual_seed(seed)) < 0.5
    packed = pack_signs(bits)
    assert packed.dtype == torch.int32 and packed.shape == (3, (n + 31) // 32)
    assert torch.equal(unpack_signs(packed, n), bits)
    assert int(pack_signs(torch.tensor([True] + [False] * 31))[0]) == 1
    assert int(pack_signs(torch.tensor([False] * 31 + [True]))[0]) == -(2**31)


@given(
    n=st.integers(1, 200),
    base=st.sampled_from([2, 3]),
    rho=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**31 - 1),
)
def test_abmp_averages_exactly_the_base_bits(n: int, base: int, rho: float, seed: int) -> None:
    scores = torch.rand(n, generator=torch.Generator().manual_seed(seed))
    bits = abmp_orders(scores, base, rho)
    assert sum(bits) == base * n
    k = int(rho * n + 1e-9)
    assert bits.count(base + 1) == k and bits.count(base - 1) == k
    if k > 0:
        up = [s for s, b in zip(scores.tolist(), bits, strict=True) if b == base + 1]
        down = [s for s, b in zip(scores.tolist(), bits, strict=True) if b == base - 1]
        assert min(up) >= max(s for s, b in zip(scores.tolist(), bits, strict=True) if b != base + 1)
        assert max(down) <= min(s for s, b in zip(scores.tolist(), bits, strict=True) if b != base - 1)


def test_abmp_count_is_floor_of_rho_n() -> None:
    bits = abmp_orders(torch.arange(100.0), 2, 0.29)  # 0.29 * 100 is 28.999... in floating point
    assert bits.count(3) == 29 and bits.count(1) == 29
    assert bits[:29] == [1] * 29 and bits[-29:] == [3] * 29


def test_abmp_quantize_is_two_bits_on_average(layer: Layer) -> None:
    w, _, h = layer(16, 256, 6)
    w[:, 64:96] *= 6.0  # an important block
    q = abmp_quantize(w, h, QuantSpec(2, True, "group", 32), ABMPConfig(rho=0.25))
    assert q.bits_per_weight == 2.0
    assert q.orders.tolist().count(3) == 2 and q.orders.tolist().count(1) == 2
    assert int(q.orders[2]) == 3
    assert bool(torch.isfinite(q.dequantize()).all())


@pytest.mark.parametrize(
    ("fn", "spec", "match"),
    [
        (daq_quantize, QuantSpec(8, True, "group", 16), "2 to 4 bits"),
        (daq_quantize, QuantSpec(2, False, "group", 16), "symmetric"),
        (daq_quantize, QuantSpec(2, True, "tensor"), "granularity"),
        (daq_quantize, QuantSpec(2, True, "group", 24), "does not divide"),
        (abmp_quantize, QuantSpec(2, True, "channel"), "granularity='group'"),
        (abmp_quantize, QuantSpec(4, True, "group", 16), "must be 2 or 3"),
    ],
)
def test_bad_specs(layer: Layer, fn: Callable, spec: QuantSpec, match: str) -> None:
    w, _, h = layer(4, 32, 7)
    with pytest.raises(ValueError, match=match):
        fn(w, h, spec)


def test_bad_statistics(layer: Layer) -> None:
    w, _, h = layer(4, 32, 8)
    spec = QuantSpec(2, True, "group", 16)
    with pytest.raises(ValueError, match="hessian contains NaN"):
        daq_quantize(w, torch.full_like(h, float("nan")), spec)
    with pytest.raises(ValueError, match="not positive definite"):
        daq_quantize(w, -torch.eye(32, dtype=torch.float64), spec, DAQConfig(damp_retries=1))
    with pytest.raises(ValueError, match="lam"):
        DAQConfig(lam=0.5)
    with pytest.raises(ValueError, match="rho"):
        ABMPConfig(rho=0.6)
