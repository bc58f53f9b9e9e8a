"""Triton Hadamard rotation (alone and fused with per-token quantization) against the Numba reference.

Bands (relative Frobenius error against the float64 reference on the same input values): fp32 output
5e-6, fp16 2e-3, bf16 1e-2. The fused kernel's codes may differ from the reference by one step where the
float32 rotation lands within rounding error of a tie (the kernels sum in a different order). Each row has
one systematic near-tie: its most negative element when that sets the scale (``lo / (|lo| / 7.5)`` is
-7.5 within an ulp for 4 bits), so up to one flip per row plus 0.1% of the codes are allowed. The fused
kernel must equal, bit for bit, the unfused Triton path ``quantize_per_token(hadamard_transform(x))``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dllm_kernels import dispatch
from dllm_kernels import reference as ref
from hypothesis import given
from hypothesis import strategies as st

FLOATS = (torch.float32, torch.float16, torch.bfloat16)
BAND = {torch.float32: 5e-6, torch.float16: 2e-3, torch.bfloat16: 1e-2}
# powers of two and Kronecker sizes m * 2^k with Paley bases 12, 20, 28, 36 and 148
SIZES = (1, 12, 16, 20, 28, 36, 48, 64, 96, 128, 148, 224, 256, 768)


@given(
    n=st.sampled_from(SIZES),
    lead=st.sampled_from(((1,), (33,), (2, 3))),
    dtype=st.sampled_from(FLOATS),
    seed=st.integers(0, 2**31),
)
def test_hadamard_transform_matches_reference(triton_device, rel_fro, n, lead, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, n, generator=gen).to(dtype)
    out = dispatch.hadamard_transform(x.to(triton_device), backend="triton")
    assert out.dtype == dtype and out.shape == x.shape
    want = ref.hadamard_transform(x.double().numpy())
    assert rel_fro(out.double().cpu().numpy(), want) <= BAND[dtype]


@given(
    data=st.data(),
    n=st.sampled_from(SIZES[1:]),
    bits=st.sampled_from((2, 4, 8)),
    symmetric=st.booleans(),
    clip_ratio=st.sampled_from((1.0, 0.8)),
    dtype=st.sampled_from(FLOATS),
    seed=st.integers(0, 2**31),
)
def test_hadamard_quantize_matches_reference(
    triton_device, token_counts, data, n, bits, symmetric, clip_ratio, dtype, seed
):
    m = data.draw(st.sampled_from(token_counts), label="m")
    x = torch.randn(m, n, generator=torch.Generator().manual_seed(seed)).to(dtype)
    codes, scale, zero = dispatch.hadamard_quantize_per_token(
        x.to(triton_device), bits, symmetric, clip_ratio, backend="triton"
    )
    r_codes, r_scale, r_zero = ref.hadamard_quantize_per_token(x.float().numpy(), bits, symmetric, clip_ratio)
    np.testing.assert_allclose(scale.cpu().numpy(), r_scale, rtol=1e-5, atol=0)
    diff = np.abs(codes.cpu().numpy().astype(np.int32) - r_codes)
    assert diff.max() <= 1 and np.count_nonzero(diff) <= m + diff.size // 1000
    if symmetric:
        assert zero is None
    else:
        assert np.abs(zero.cpu().numpy() - r_zero).max() <= 1


@given(
    n=st.sampled_from(SIZES[1:]),
    bits=st.sampled_from((4, 8)),
    symmetric=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_fused_equals_unfused_triton(triton_device, n, bits, symmetric, seed):
    """The fused kernel quantizes exactly the fp32 rotation that ``hadamard_transform`` returns."""
    x = torch.randn(3, n, generator=torch.Generator().manual_seed(seed)).to(triton_device)
    fused = dispatch.hadamard_quantize_per_token(x, bits, symmetric, backend="triton")
    rotated = dispatch.hadamard_transform(x, backend="triton")
    unfused = dispatch.quantize_per_token(rotated, bits, symmetric, backend="triton")
    for got, want in zip(fused, unfused, strict=True):
        assert (got is None and want is None) or torch.equal(got, want)


@pytest.mark.parametrize("n", [0, 3, 6, 25, 184])
def test_hadamard_rejects_unsupported_sizes(triton_device, n):
    with pytest.raises(ValueError, match="Hadamard"):
        dispatch.hadamard_transform(torch.randn(2, n, device=triton_device), backend="triton")


def test_hadamard_rejects_bad_tensors(triton_device):
    dev = triton_device
    with pytest.raises(ValueError, match="contiguous"):
        dispatch.hadamard_transform(torch.randn(16, 4, device=dev).t(), backend="triton")
    with pytest.raises(ValueError, match="dtype"):
        dispatch.hadamard_transform(torch.zeros(4, 16, dtype=torch.int32, device=dev), backend="triton")
    with pytest.raises(ValueError, match="2-D"):
        dispatch.hadamard_quantize_per_token(torch.randn(2, 2, 16, device=dev), 8, backend="triton")
    with pytest.raises(ValueError, match="register tile"):
        dispatch.hadamard_transform(torch.randn(1, 1 << 16, device=dev), backend="triton")


@pytest.mark.gpu
@pytest.mark.parametrize("n", [128, 3584, 4096, 12288, 18944])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_hadamard_gpu_model_sizes(rel_fro, n, dtype):
    x = torch.randn(257, n, generator=torch.Generator().manual_seed(n)).to(dtype)
    out = dispatch.hadamard_transform(x.cuda())
    assert rel_fro(out.double().cpu().numpy(), ref.hadamard_transform(x.double().numpy())) <= BAND[dtype]
    codes, scale, _ = dispatch.hadamard_quantize_per_token(x.cuda(), 8)
    r_codes, r_scale, _ = ref.hadamard_quantize_per_token(x.float().numpy(), 8)
    np.testing.assert_allclose(scale.cpu().numpy(), r_scale, rtol=1e-5, atol=0)
    diff = np.abs(codes.cpu().numpy().astype(np.int32) - r_codes)
    assert diff.max() <= 1 and np.count_nonzero(diff) <= x.shape[0] + diff.size // 1000
