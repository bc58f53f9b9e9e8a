"""Activation quantizers and `ActQuantLinear` (fake and integer-kernel paths)."""

from __future__ import annotations

import dllm_kernels
import hypothesis.strategies as st
import pytest
import torch
from dllm_actquant import (
    ActQuantConfig,
    ActQuantLinear,
    OnlineHadamard,
    StaticActParams,
    fake_quantize_activation,
    fold_rotation,
    quantize_activation,
)
from dllm_actquant.rotation import HadamardRotation
from dllm_kernels import QuantSpec
from hypothesis import given
from torch import nn


def _x(seed: int, m: int = 16, k: int = 64, outlier: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    x[:, 3] *= outlier
    return x


@pytest.mark.parametrize(
    "kwargs",
    [{"bits": 6}, {"symmetric": 1}, {"granularity": "channel"}, {"clip_ratio": 0.0}, {"clip_ratio": 1.5}],
)
def test_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="ActQuantConfig"):
        ActQuantConfig(**kwargs)


@given(
    seed=st.integers(0, 1000),
    bits=st.sampled_from([4, 8]),
    symmetric=st.booleans(),
    clip=st.sampled_from([1.0, 0.9, 0.7]),
)
def test_dynamic_fake_quant_error_is_bounded(seed: int, bits: int, symmetric: bool, clip: float) -> None:
    """Inside the clipped range the error is at most half a step; outside, values saturate at the edge."""
    x = _x(seed, outlier=5.0)
    cfg = ActQuantConfig(bits=bits, symmetric=symmetric, clip_ratio=clip)
    xq = fake_quantize_activation(x, cfg)
    codes, scale, _ = quantize_activation(x, cfg)
    assert codes.dtype == torch.int8 and int(codes.min()) >= cfg.qmin and int(codes.max()) <= cfg.qmax
    lo = x.amin(1, keepdim=True).clamp(max=0) * clip
    hi = x.amax(1, keepdim=True).clamp(min=0) * clip
    inside = (x >= lo) & (x <= hi)
    step = scale[:, None].expand_as(x)
    err = (xq - x).abs()
    assert bool((err[inside] <= 0.5 * step[inside] * (1 + 1e-5) + 1e-6).all())
    if clip == 1.0 and symmetric:  # the plain per-token spec of dllm_kernels
        ref = dllm_kernels.fake_quantize(x, QuantSpec(bits, True, "token"))
        torch.testing.assert_close(xq, ref)


def test_static_params_from_stats() -> None:
    x = _x(0)
    cfg = ActQuantConfig(bits=8, granularity="tensor")
    params = StaticActParams.from_absmax(x.abs().amax(0), cfg)
    assert params.scale == pytest.approx(float(x.abs().max()) / 127.5, rel=1e-6)
    xq = fake_quantize_activation(x, cfg, params)
    assert float((xq - x).abs().max()) <= params.scale / 2 + 1e-6
    asym = ActQuantConfig(bits=4, symmetric=False, granularity="tensor")
    with pytest.raises(ValueError, match="min and max"):
        StaticActParams.from_absmax(x.abs().amax(0), asym)
    p2 = StaticActParams.from_minmax(float(x.min()), float(x.max()), asym)
    assert p2.zero is not None
    with pytest.raises(ValueError, match="StaticActParams"):
        quantize_activation(x, asym)
    with pytest.raises(ValueError, match="does not match"):
        quantize_activation(x, asym, params)


def _linear(seed: int, k: int = 64, n: int = 48, bias: bool = True) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.normal_(0, k**-0.5)
        if bias:
            lin.bias.normal_(0, 0.1)
    return lin


def _fake_weight_linear(lin: nn.Linear, bits: int) -> nn.Linear:
    out = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None)
    with torch.no_grad():
        out.weight.copy_(dllm_kernels.fake_quantize(lin.weight.detach(), QuantSpec(bits, True, "channel")))
        if lin.bias is not None:
            out.bias.copy_(lin.bias)
    return out


@given(
    seed=st.integers(0, 100),
    wbits=st.sampled_from([4, 8]),
    abits=st.sampled_from([4, 8]),
    symmetric=st.booleans(),
)
def test_kernel_path_matches_fake_path(seed: int, wbits: int, abits: int, symmetric: bool) -> None:
    """The integer GEMM (with the asymmetric zero-point correction) equals fake quantization of both sides."""
    lin = _linear(seed)
    x = _x(seed, m=12).reshape(3, 4, 64)
    cfg = ActQuantConfig(bits=abits, symmetric=symmetric)
    real = ActQuantLinear(lin, cfg, mode="kernel", weight_bits=wbits)
    fake = ActQuantLinear(_fake_weight_linear(lin, wbits), cfg)
    with torch.no_grad():
        y_real, y_fake = real(x), fake(x)
    assert y_real.shape == (3, 4, 48)
    torch.testing.assert_close(y_real, y_fake, rtol=1e-4, atol=1e-4)


def test_w8a8_is_close_to_float() -> None:
    lin = _linear(1)
    x = _x(1, m=32)
    q = ActQuantLinear(lin, ActQuantConfig(bits=8), mode="kernel", weight_bits=8)
    with torch.no_grad():
        rel = float((q(x) - lin(x)).norm() / lin(x).norm())
    assert 0 < rel < 0.02


def test_static_kernel_path() -> None:
    lin = _linear(2, bias=False)
    x = _x(2)
    cfg = ActQuantConfig(bits=8, granularity="tensor")
    params = StaticActParams.from_absmax(x.abs().amax(0), cfg)
    real = ActQuantLinear(lin, cfg, static=params, mode="kernel", weight_bits=8)
    fake = ActQuantLinear(_fake_weight_linear(lin, 8), cfg, static=params)
    with torch.no_grad():
        torch.testing.assert_close(real(x), fake(x), rtol=1e-4, atol=1e-4)


def test_fused_online_hadamard_matches_unfused() -> None:
    """OnlineHadamard around a kernel-mode ActQuantLinear uses hadamard_quantize_per_token (same result)."""
    k = 96  # 12 * 8: a Kronecker Hadamard order
    lin = _linear(3, k=k, n=32)
    x = _x(3, m=10, k=k, outlier=20.0)
    with torch.no_grad():
        ref = lin(x)
        wrapped = fold_rotation(lin, HadamardRotation(k))
        assert isinstance(wrapped, OnlineHadamard)
        torch.testing.assert_close(wrapped(x), ref, rtol=1e-5, atol=1e-5)  # float invariance
        cfg = ActQuantConfig(bits=4)
        wrapped.inner = ActQuantLinear(lin, cfg, mode="kernel", weight_bits=8)
        fused = wrapped(x)
        manual = ActQuantLinear(lin, cfg, mode="kernel", weight_bits=8)(dllm_kernels.hadamard_transform(x))
    torch.testing.assert_close(fused, manual, rtol=1e-4, atol=1e-4)


def test_activation_linear_argument_errors() -> None:
    lin = _linear(0)
    with pytest.raises(ValueError, match="weight_bits"):
        ActQuantLinear(lin, ActQuantConfig(), mode="kernel")
    with pytest.raises(ValueError, match="fake mode"):
        ActQuantLinear(lin, ActQuantConfig(), weight_bits=8)
    with pytest.raises(ValueError, match=r"nn\.Linear"):
        ActQuantLinear(nn.Sequential(lin), ActQuantConfig(), mode="kernel", weight_bits=8)
    with pytest.raises(ValueError, match="StaticActParams"):
        ActQuantLinear(lin, ActQuantConfig(granularity="tensor"))
    seq = ActQuantLinear(nn.Sequential(lin, nn.ReLU()), ActQuantConfig())  # fake mode wraps any module
    assert seq(torch.randn(2, 64)).shape == (2, 48)
