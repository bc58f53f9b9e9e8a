"""A quantized-activation layer around a packed symmetric weight runs integer GEMMs on the CPU, with the
numbers of the fake-quantized layer (only float rounding differs), and a restored W8A8 checkpoint uses it."""

from __future__ import annotations

import torch
from dllm_actquant import ActQuantConfig, ActQuantLinear
from dllm_actquant.linear import packed_integer_inner
from dllm_kernels import QuantSpec
from dllm_weightquant import QuantLinear, rtn_quantize
from torch import nn


def _layers(act_symmetric: bool) -> tuple[ActQuantLinear, ActQuantLinear, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(64, 24, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(24, 64, generator=g))
    q = rtn_quantize(lin.weight, None, QuantSpec(8, True, "group", 32))
    config = ActQuantConfig(bits=8, symmetric=act_symmetric)
    kernel = ActQuantLinear(QuantLinear.from_linear(lin, q, mode="kernel"), config, mode="kernel")
    fake = ActQuantLinear(QuantLinear.from_linear(lin, q, mode="fake"), config, mode="fake")
    return kernel, fake, torch.randn(5, 64, generator=g) * 3


def test_integer_gemm_on_a_packed_inner_matches_fake_quantization() -> None:
    for act_symmetric in (True, False):
        kernel, fake, x = _layers(act_symmetric)
        assert kernel.packed_inner
        with torch.no_grad():
            got, want = kernel(x), fake(x)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-4), (got - want).abs().max()


def test_only_symmetric_kernel_mode_layers_are_packed_integer_inners() -> None:
    lin = nn.Linear(64, 8)
    asym = rtn_quantize(lin.weight, None, QuantSpec(8, False, "group", 32))
    sym = rtn_quantize(lin.weight, None, QuantSpec(8, True, "group", 32))
    assert packed_integer_inner(QuantLinear.from_linear(lin, sym, mode="kernel"))
    assert not packed_integer_inner(QuantLinear.from_linear(lin, asym, mode="kernel"))  # zero points
    assert not packed_integer_inner(QuantLinear.from_linear(lin, sym, mode="fake"))  # a float weight
    assert not packed_integer_inner(lin)
