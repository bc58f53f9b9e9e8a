"""Numba backend (dllm_kernels.ops_cpu) and the package exports: dtypes, parity with the reference, errors."""

from __future__ import annotations

import subprocess
import sys

import dllm_kernels
import numpy as np
import pytest
import torch
from dllm_kernels import QuantSpec, ops_cpu
from dllm_kernels import reference as ref


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_fake_quantize_keeps_dtype_and_matches_reference(dtype: torch.dtype) -> None:
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(0)).to(dtype)
    spec = QuantSpec(4, False, "group", 32)
    out = dllm_kernels.fake_quantize(x, spec)
    assert out.dtype == dtype and out.shape == x.shape
    expected = ref.fake_quantize(x.float().numpy(), spec)
    assert torch.equal(out, torch.from_numpy(expected).to(dtype))
    codes, scale, zero = dllm_kernels.quantize(x, spec)
    assert (codes.dtype, scale.dtype, zero.dtype) == (torch.uint8, torch.float32, torch.int32)
    deq = dllm_kernels.dequantize(codes, scale, zero, spec)
    assert deq.dtype == torch.float32 and torch.equal(deq, torch.from_numpy(expected))


def test_pack_and_gemm_wrappers_match_reference() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 64, generator=g, dtype=torch.bfloat16)
    w = torch.randn(7, 64, generator=g)
    spec = QuantSpec(3, True, "group", 16)
    codes, scale, zero = ops_cpu.quantize(w, spec)
    packed = ops_cpu.pack(codes, 3)
    assert packed.dtype == torch.int32 and packed.shape == (7, 6)
    assert torch.equal(ops_cpu.unpack(packed, 3, 64), codes)
    y = ops_cpu.wna16_gemm(x, packed, scale, zero, 3, 16)
    expected = ref.wna16_gemm(x.float().numpy(), packed.numpy(), scale.numpy(), None, 3, 16)
    assert y.dtype == torch.float32 and torch.equal(y, torch.from_numpy(expected))

    xq, xs, xz = ops_cpu.quantize_per_token(x, 8)
    assert xz is None and xq.dtype == torch.int8 and xs.shape == (5,)
    wq, ws, _ = ops_cpu.quantize_per_token(w, 8)
    y8 = ops_cpu.int8_gemm(xq, xs, wq, ws)
    assert torch.equal(y8, torch.from_numpy(ref.int8_gemm(xq.numpy(), xs.numpy(), wq.numpy(), ws.numpy())))
    w4, ws4, _ = ops_cpu.quantize_per_token(w, 4)
    x4, xs4, _ = ops_cpu.quantize_per_token(x, 4)
    p4 = ops_cpu.pack(w4, 4)
    assert torch.equal(ops_cpu.w4a8_gemm(xq, xs, p4, ws4), ops_cpu.int8_gemm(xq, xs, w4, ws4))
    assert torch.equal(ops_cpu.w4a4_gemm(x4, xs4, p4, ws4), ops_cpu.int8_gemm(x4, xs4, w4, ws4))
    zp = torch.tensor([[1, 2], [3, 3]], dtype=torch.uint8)
    assert torch.equal(ops_cpu.unpack_rows(ops_cpu.pack_rows(zp, 2), 2, 2, symmetric=False), zp)


def test_hadamard_wrappers() -> None:
    x = torch.randn(3, 96, dtype=torch.bfloat16)
    out = ops_cpu.hadamard_transform(x)
    assert out.dtype == torch.bfloat16
    h = ops_cpu.hadamard_matrix(96)
    assert h.dtype == torch.float64
    torch.testing.assert_close(out.double(), x.double() @ h, atol=2e-2, rtol=1e-2)
    codes, scale, _ = ops_cpu.hadamard_quantize_per_token(x, 8)
    expected = ref.hadamard_quantize_per_token(x.float().numpy(), 8)
    assert torch.equal(codes, torch.from_numpy(expected[0])) and torch.equal(
        scale, torch.from_numpy(expected[1])
    )
    assert dllm_kernels.supported_hadamard_size(18944) and not dllm_kernels.supported_hadamard_size(100)


def test_wrapper_errors() -> None:
    spec = QuantSpec(4)
    with pytest.raises(ValueError, match=r"x must be a torch.Tensor, got ndarray"):
        ops_cpu.quantize(np.zeros((2, 4), np.float32), spec)
    with pytest.raises(ValueError, match="float16/bfloat16/float32/float64 tensor"):
        ops_cpu.quantize(torch.zeros(2, 4, dtype=torch.int32), spec)
    with pytest.raises(ValueError, match="needs CPU tensors"):
        ops_cpu.quantize(torch.zeros(2, 4, device="meta"), spec)
    with pytest.raises(ValueError, match="int8/uint8/int32 tensor"):
        ops_cpu.pack(torch.zeros(2, 4, dtype=torch.int64), 4)


def test_public_api_and_import_without_triton() -> None:
    expected = {
        "QuantSpec", "quantize", "dequantize", "fake_quantize", "pack", "unpack", "hadamard_matrix",
        "hadamard_transform", "wna16_gemm", "int8_gemm", "w4a8_gemm", "w4a4_gemm", "quantize_per_token",
    }  # fmt: skip
    assert expected <= set(dllm_kernels.__all__)
    assert all(hasattr(dllm_kernels, name) for name in dllm_kernels.__all__)
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import dllm_kernels, dllm_kernels.reference, dllm_kernels.ops_cpu, dllm_kernels.spec\n"
        "assert sys.modules['triton'] is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
