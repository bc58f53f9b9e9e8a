"""Triton per-token activation quantization against the Numba reference: codes, scales and zero points
must be bit-identical (same float32 formulas, IEEE division, round half to even)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dllm_kernels import dispatch
from dllm_kernels import reference as ref
from hypothesis import given
from hypothesis import strategies as st

FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _assert_same_quant(out: tuple, want: tuple) -> None:
    codes, scale, zero = out
    r_codes, r_scale, r_zero = want
    assert codes.dtype == torch.int8 and scale.dtype == torch.float32
    np.testing.assert_array_equal(scale.cpu().numpy(), r_scale)
    np.testing.assert_array_equal(codes.cpu().numpy(), r_codes)
    if r_zero is None:
        assert zero is None
    else:
        assert zero.dtype == torch.int32
        np.testing.assert_array_equal(zero.cpu().numpy(), r_zero)


@given(
    data=st.data(),
    k=st.integers(1, 130),
    bits=st.sampled_from((2, 3, 4, 8)),
    symmetric=st.booleans(),
    clip_ratio=st.sampled_from((1.0, 0.9, 0.5)),
    kind=st.sampled_from(("normal", "outliers", "zero_rows", "ties", "positive")),
    dtype=st.sampled_from(FLOATS),
    seed=st.integers(0, 2**31),
)
def test_quantize_per_token_bit_exact(
    triton_device, token_counts, make_matrix, data, k, bits, symmetric, clip_ratio, kind, dtype, seed
):
    m = data.draw(st.sampled_from(token_counts), label="m")
    x = torch.from_numpy(make_matrix(seed, m, k, kind, magnitude=3.0)).to(dtype)
    out = dispatch.quantize_per_token(x.to(triton_device), bits, symmetric, clip_ratio, backend="triton")
    _assert_same_quant(out, ref.quantize_per_token(x.float().numpy(), bits, symmetric, clip_ratio))


def test_quantize_per_token_ties_round_to_even(triton_device):
    """Scale 1 (absmax 127.5) puts x = n + 0.5 exactly on ties: they must round to the even neighbour."""
    x = torch.tensor([[127.5, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5]], device=triton_device)
    codes, scale, _ = dispatch.quantize_per_token(x, 8, backend="triton")
    assert scale.item() == 1.0
    assert codes.cpu().tolist() == [[127, 0, 2, 2, 0, -2, -2, 4]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 6}, "bits must be one of"),
        ({"clip_ratio": 0.0}, "clip_ratio"),
        ({"clip_ratio": 1.5}, "clip_ratio"),
        ({"symmetric": 1}, "symmetric must be a bool"),
    ],
)
def test_quantize_per_token_rejects_bad_arguments(triton_device, kwargs, message):
    args = {"x": torch.randn(3, 8, device=triton_device), "bits": 8} | kwargs
    with pytest.raises(ValueError, match=message):
        dispatch.quantize_per_token(**args, backend="triton")


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.randn(2, 3, 8), "2-D"),
        (torch.randn(8, 3).t(), "contiguous"),
        (torch.zeros(3, 8, dtype=torch.int8), "dtype"),
        (torch.zeros(3, 0), "at least one column"),
    ],
)
def test_quantize_per_token_rejects_bad_tensors(triton_device, x, message):
    with pytest.raises(ValueError, match=message):
        dispatch.quantize_per_token(x.to(triton_device), 8, backend="triton")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("symmetric", [True, False])
def test_quantize_per_token_gpu_large_bit_exact(make_matrix, dtype, symmetric):
    x = torch.from_numpy(make_matrix(7, 257, 18944, "outliers")).to(dtype)
    out = dispatch.quantize_per_token(x.cuda(), 8, symmetric)
    _assert_same_quant(out, ref.quantize_per_token(x.float().numpy(), 8, symmetric))
