"""QuantLinear (kernel and fake modes), QuantizedWeight, replace_linear."""

from __future__ import annotations

import json
from collections.abc import Callable

import dllm_kernels
import pytest
import torch
from dllm_kernels import QuantSpec
from dllm_kernels.cpu import native_bf16
from dllm_sampler import DiffusionLM
from dllm_weightquant import (
    QuantizedWeight,
    QuantLinear,
    daq_quantize,
    gptq_quantize,
    replace_linear,
    rtn_quantize,
    set_compute_dtype,
)
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

Layer = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

uniform_specs = st.builds(
    lambda bits, sym, gran: QuantSpec(bits, sym, gran, 16 if gran == "group" else None),
    st.sampled_from([2, 3, 4, 8]),
    st.booleans(),
    st.sampled_from(["channel", "group", "tensor"]),
)


@given(spec=uniform_specs, seed=st.integers(0, 2**31 - 1), bias=st.booleans())
def test_kernel_and_fake_modes_agree(spec: QuantSpec, seed: int, bias: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(48, 20, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(20, 48, generator=g))
    q = rtn_quantize(lin.weight, None, spec)
    x = torch.randn(3, 5, 48, generator=g)
    exact = QuantLinear.from_linear(lin, q, mode="kernel")
    exact.compute_dtype = torch.float32
    kernel = exact(x)
    fake = QuantLinear.from_linear(lin, q, mode="fake")(x)
    want = torch.nn.functional.linear(
        x.double(), q.dequantize().double(), None if lin.bias is None else lin.bias.double()
    )
    assert kernel.shape == (3, 5, 20)
    assert torch.allclose(kernel.double(), want, atol=1e-4, rtol=1e-5)
    assert torch.allclose(fake.double(), want, atol=1e-4, rtol=1e-5)
    # bf16 GEMM inputs (the CPU default where bf16 is native): within bf16 rounding of inputs and result
    exact.compute_dtype = torch.bfloat16
    half = exact(x).double()
    assert half.dtype == torch.float64 and float((half - want).norm() / want.norm()) < 2e-2


def test_compute_dtype_default_and_set_compute_dtype(layer: Layer) -> None:
    w, _, _ = layer(8, 32, 1)
    lin = nn.Linear(32, 8, bias=False)
    q = rtn_quantize(w, None, QuantSpec(4, True, "group", 16))
    model = nn.Sequential(
        QuantLinear.from_linear(lin, q, mode="kernel"), QuantLinear.from_linear(lin, q, mode="fake")
    )
    x = torch.randn(4, 32)
    want = torch.bfloat16 if native_bf16() else torch.float32
    assert model[0].gemm_dtype(x) == want
    assert set_compute_dtype(model, torch.float32) == 1  # kernel-mode layers only
    assert model[0].gemm_dtype(x) == torch.float32
    assert torch.allclose(model[0](x), x @ q.dequantize().T, atol=1e-5)
    with pytest.raises(ValueError, match="compute_dtype"):
        set_compute_dtype(model, torch.float16)

    class Loaded:  # what load_any returns: the module under .model
        def __init__(self, module: nn.Module) -> None:
            self.model = module

    assert set_compute_dtype(Loaded(model), None) == 1
    assert model[0].gemm_dtype(x) == want
    with pytest.raises(TypeError, match=r"nn\.Module or a DiffusionLM"):
        set_compute_dtype(object(), None)


def test_quantized_weight_round_trips_codes(layer: Layer) -> None:
    w, _, h = layer(12, 64, 0)
    spec = QuantSpec(3, False, "group", 16)
    q = gptq_quantize(w, h, spec)
    again = QuantizedWeight.from_codes(q.codes, q.scale, q.zero, spec)
    assert torch.equal(again.packed, q.packed)
    assert torch.equal(q.dequantize(), dllm_kernels.dequantize(q.codes, q.scale, q.zero, spec))
    with pytest.raises(ValueError, match="scale must be float32"):
        QuantizedWeight(q.packed, q.scale[:, :2], q.zero, spec, q.shape)
    with pytest.raises(ValueError, match="zero must be None"):
        QuantizedWeight(q.packed, q.scale, None, spec, q.shape)


def test_g_idx_weights_run_through_the_kernel() -> None:
    g = torch.Generator().manual_seed(3)
    spec = QuantSpec(4, True, "group", 8)
    codes = torch.randint(-8, 8, (6, 32), generator=g, dtype=torch.int8)
    scale = torch.rand(6, 4, generator=g) + 0.1
    g_idx = torch.randperm(32, generator=g).remainder(4).to(torch.int32)  # 8 columns per group, scattered
    q = QuantizedWeight.from_codes(codes, scale, None, spec, g_idx)
    dense = codes.float() * scale[:, g_idx.long()]
    assert torch.equal(q.dequantize(), dense)
    x = torch.randn(5, 32, generator=g)
    layer = QuantLinear(q, mode="kernel")
    layer.compute_dtype = torch.float32
    assert torch.allclose(layer(x), x @ dense.T, atol=1e-5)


def test_dtype_casts_keep_the_quantized_buffers_exact(layer: Layer) -> None:
    w, _, _ = layer(8, 32, 1)
    q = rtn_quantize(w, None, QuantSpec(4, False, "group", 16))
    for mode in ("kernel", "fake"):
        m = QuantLinear(q, torch.randn(8), mode=mode).to(torch.bfloat16)
        assert m.weight_scale.dtype == torch.float32 and m.weight_packed.dtype == torch.int32
        assert torch.equal(m.qweight.dequantize(), q.dequantize())
        assert m.bias is not None and m.bias.dtype == torch.bfloat16
        assert m(torch.randn(2, 32, dtype=torch.bfloat16)).dtype == torch.bfloat16
    assert QuantLinear(q, mode="fake").to(torch.bfloat16).weight.dtype == torch.bfloat16


def test_multibinary_layers_run_fake_only(layer: Layer) -> None:
    w, x, h = layer(8, 32, 2)
    q = daq_quantize(w, h, QuantSpec(2, True, "group", 16))
    m = QuantLinear(q, mode="fake")
    assert torch.allclose(m(x.float()), x.float() @ q.dequantize().T, atol=1e-4)
    with pytest.raises(ValueError, match="mode='fake'"):
        QuantLinear(q, mode="kernel")


def test_replace_linear(tiny_dlm: Callable[[str], DiffusionLM]) -> None:
    dlm = tiny_dlm("llada")
    name = dlm.topology.block(0).names["down"]
    lin = dlm.model.get_submodule(name)
    q = rtn_quantize(lin.weight, None, QuantSpec(4, True, "group", 16))
    ids = torch.randint(0, 40, (1, 8))
    old = replace_linear(dlm.model, name, QuantLinear.from_linear(lin, q, mode="fake"))
    assert old is lin and isinstance(dlm.model.get_submodule(name), QuantLinear)
    assert dlm.logits(ids).shape == (1, 8, dlm.vocab_size)
    with pytest.raises(KeyError, match="not a module"):
        replace_linear(dlm.model, "model.nope.q_proj", old)
    with pytest.raises(ValueError, match="not a Linear"):
        replace_linear(dlm.model, dlm.topology.block(0).names["attn_norm"], old)
    with pytest.raises(ValueError, match="expected"):
        replace_linear(dlm.model, dlm.topology.block(0).names["q"], old)
    with pytest.raises(ValueError, match="does not match"):
        QuantLinear.from_linear(nn.Linear(16, 8), q)
    with pytest.raises(ValueError, match="mode"):
        QuantLinear(q, mode="int4")


def _assert_same_layer(a: QuantLinear, b: QuantLinear, dtype: torch.dtype = torch.float32) -> None:
    assert type(a.qweight) is type(b.qweight) and a.mode == b.mode
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
    x = torch.randn(2, a.in_features, generator=torch.Generator().manual_seed(1)).to(dtype)
    assert torch.equal(a(x), b(x))


@given(
    spec=uniform_specs,
    seed=st.integers(0, 2**31 - 1),
    bias=st.booleans(),
    mode=st.sampled_from(["kernel", "fake"]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    scattered=st.booleans(),
)
def test_layout_and_state_rebuild_the_same_uniform_layer(
    spec: QuantSpec, seed: int, bias: bool, mode: str, dtype: torch.dtype, scattered: bool
) -> None:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(12, 32, generator=g)
    lin = nn.Linear(32, 12, bias=bias)
    q = rtn_quantize(w, None, spec)
    if scattered and spec.granularity == "group":  # groups of columns given by a g_idx
        g_idx = torch.randperm(32, generator=g).remainder(32 // 16).to(torch.int32)
        q = QuantizedWeight.from_codes(q.codes, q.scale, q.zero, spec, g_idx)
    layer = QuantLinear.from_linear(lin, q, mode=mode, dtype=dtype)
    layout = json.loads(json.dumps(layer.layout()))  # JSON-ready
    _assert_same_layer(
        layer, QuantLinear.from_layout(layout, layer.state_dict()), dtype if mode == "fake" else torch.float32
    )


@given(seed=st.integers(0, 2**31 - 1), bias=st.booleans(), bits=st.sampled_from([2, 3]))
def test_layout_and_state_rebuild_the_same_multibinary_layer(seed: int, bias: bool, bits: int) -> None:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 32, generator=g)
    x = torch.randn(64, 32, generator=g)
    q = daq_quantize(w, 2 * x.T @ x / 64, QuantSpec(bits, True, "group", 16))
    layer = QuantLinear(q, torch.randn(8, generator=g) if bias else None, mode="fake")
    layout = json.loads(json.dumps(layer.layout()))
    _assert_same_layer(layer, QuantLinear.from_layout(layout, layer.state_dict()))
