"""GGUF grids: dllmq's blocks decode bit for bit as gguf's own dequantization, RTN codes equal gguf's
quantizer where it has one (Q8_0, Q4_0), GPTQ on the grids, and shape errors naming the fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dllm_kernels import GGUFSpec, gguf_grid
from dllm_weightquant import GPTQConfig, RTNConfig, gptq_quantize, rtn_quantize
from dllm_weightquant.gguf import GGUFWeight, gguf_rtn
from dllm_weightquant.qlinear import QuantLinear
from hypothesis import given
from hypothesis import strategies as st

gguf = pytest.importorskip("gguf")

TYPES = ("Q8_0", "Q4_0", "Q4_K")


def _theirs(q: GGUFWeight) -> np.ndarray:
    return gguf.quants.dequantize(q.data.numpy(), getattr(gguf.GGMLQuantizationType, q.gguf_type))


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@st.composite
def weights(draw: st.DrawFn, gguf_type: str) -> torch.Tensor:
    """Random ``[out, k * block]`` weights: scaled normals, with zero blocks, ties and outliers mixed in."""
    per = gguf_grid.block_bytes(gguf_type)[0]
    out = draw(st.integers(1, 5))
    blocks = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-4, 0.02, 1.0, 30.0]))
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, blocks * per, generator=g) * scale
    kind = draw(st.sampled_from(["plain", "zero_block", "ties", "outlier", "positive"]))
    if kind == "zero_block":
        w[:, :32] = 0.0
    elif kind == "ties":
        w = torch.round(w / scale * 2) * scale / 2
    elif kind == "outlier":
        w[0, 3] = 50.0 * scale
    elif kind == "positive":
        w = w.abs()
    return w


@pytest.mark.parametrize("gguf_type", TYPES)
@given(data=st.data())
def test_dequantize_equals_gguf_bit_for_bit(gguf_type: str, data: st.DataObject) -> None:
    w = data.draw(weights(gguf_type))
    q = gguf_rtn(w, GGUFSpec.of(gguf_type))
    assert _same_bits(q.dequantize().numpy(), _theirs(q))


@pytest.mark.parametrize("gguf_type", ["Q8_0", "Q4_0"])
@given(data=st.data())
def test_rtn_codes_equal_gguf_quantize(gguf_type: str, data: st.DataObject) -> None:
    """gguf-py implements quantize for Q8_0 and Q4_0 (not for Q4_K): the bytes must be identical."""
    w = data.draw(weights(gguf_type))
    q = gguf_rtn(w, GGUFSpec.of(gguf_type))
    reference = gguf.quants.quantize(w.numpy(), getattr(gguf.GGMLQuantizationType, gguf_type))
    assert np.array_equal(q.data.numpy(), reference)


@pytest.mark.parametrize("gguf_type", TYPES)
@given(data=st.data())
def test_gptq_blocks_decode_as_gguf_and_beat_rtn(gguf_type: str, data: st.DataObject) -> None:
    w = data.draw(weights(gguf_type)).float()
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
    x = torch.randn(4 * w.shape[1], w.shape[1], generator=g) * torch.linspace(0.2, 3.0, w.shape[1])
    h = x.T @ x
    q = gptq_quantize(w, h, GGUFSpec.of(gguf_type), GPTQConfig(block_size=16))
    assert isinstance(q, GGUFWeight)
    assert _same_bits(q.dequantize().numpy(), _theirs(q))
    rtn = gguf_rtn(w, GGUFSpec.of(gguf_type)).dequantize()

    def objective(d: torch.Tensor) -> float:
        e = (w - d).double()
        return float(torch.trace(e @ h.double() @ e.T))

    assert objective(q.dequantize()) <= objective(rtn) * 1.02 + 1e-9


def test_q4k_scales_are_six_bit_against_fp16_super_scales() -> None:
    w = torch.randn(3, 512)
    q = gguf_rtn(w, GGUFSpec.of("Q4_K"))
    blocks = q.data.reshape(3, 2, 144)
    d = blocks[..., :2].contiguous().view(torch.float16).float()
    codes, scale, _minimum = gguf_grid.unpack_rows("Q4_K", q.data, 512)
    sub = scale.reshape(3, 2, 8) / d  # the 6-bit integers sc_j
    assert torch.equal(sub, sub.round()) and int(sub.max()) <= 63
    assert int(codes.min()) >= 0 and int(codes.max()) <= 15


def test_rtn_and_qlinear_route_gguf_specs() -> None:
    w = torch.randn(8, 64)
    q = rtn_quantize(w, None, GGUFSpec.of("Q4_0"))
    assert isinstance(q, GGUFWeight)
    layer = QuantLinear(q, mode="fake")
    assert torch.equal(layer.weight, q.dequantize())
    state = {k: v for k, v in layer.state_dict().items()}
    again = QuantLinear.from_layout(layer.layout(), state)
    assert torch.equal(again.qweight.data, q.data)
    with pytest.raises(ValueError, match="mode='fake'"):
        QuantLinear(q, mode="kernel")
    with pytest.raises(ValueError, match="clip"):
        rtn_quantize(w, None, GGUFSpec.of("Q4_0"), RTNConfig(clip_ratio=0.9))


def test_bad_row_length_names_tensor_and_fallback() -> None:
    with pytest.raises(gguf_grid.GGUFShapeError, match=r"blk\.0\.ffn_down.*Q8_0 instead"):
        gguf_rtn(torch.randn(4, 96), GGUFSpec.of("Q4_K"), "blk.0.ffn_down")
    with pytest.raises(gguf_grid.GGUFShapeError, match=r"q_proj.*F16 instead"):
        gguf_rtn(torch.randn(4, 40), GGUFSpec.of("Q8_0"), "q_proj")
    with pytest.warns(RuntimeWarning, match="quantized as Q8_0"):
        q = rtn_quantize(torch.randn(4, 96), None, GGUFSpec.of("Q4_K"))
    assert q.gguf_type == "Q8_0"
    with pytest.raises(ValueError, match="GGUFSpec Q4_K is bits=4"):
        GGUFSpec(bits=8, symmetric=False, granularity="group", group_size=32, gguf_type="Q4_K")
