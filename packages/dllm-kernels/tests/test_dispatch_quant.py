"""quantize / dequantize / fake_quantize and the pack ops through the dispatcher: the backend ``auto`` picks,
one validation for every backend, the same outputs, the package exporting the dispatcher's functions."""

from __future__ import annotations

import dllm_kernels
import numpy as np
import pytest
import torch
from dllm_kernels import QuantSpec, dispatch
from dllm_kernels import reference as ref
from hypothesis import given
from hypothesis import strategies as st

QUANT_BACKENDS = ("numba", "torch", "triton")
PACK_BACKENDS = ("numba", "torch")
PRIMITIVES = ("quantize", "dequantize", "fake_quantize", "pack", "unpack", "pack_rows", "unpack_rows")


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(dispatch.BACKEND_ENV, raising=False)
    return monkeypatch


def _device(backend: str, triton_device: str) -> str:
    return triton_device if backend == "triton" else "cpu"


def test_package_exports_the_dispatcher() -> None:
    for name in dispatch.__all__:
        if name in dllm_kernels.__all__:
            assert getattr(dllm_kernels, name) is getattr(dispatch, name), name
    assert set(PRIMITIVES) <= set(dllm_kernels.__all__)


def test_auto_picks_cpu_gemms_then_numba_on_cpu_and_torch_for_fp8(no_env) -> None:
    x = torch.randn(4, 16)
    assert dispatch.resolve_backend("auto", [x], dispatch.BACKENDS) == "cpu"
    assert dispatch.resolve_backend("auto", [x], ("numba", "triton", "torch")) == "numba"
    assert dispatch.resolve_backend("auto", [x], ("numba", "torch")) == "numba"
    assert dispatch.resolve_backend("auto", [x], ("torch",)) == "torch"
    codes, _, zero = dllm_kernels.quantize(x, QuantSpec(8, granularity="token", type="float"))
    assert codes.dtype == torch.float8_e4m3fn and zero is None
    for backend in ("numba", "triton"):
        with pytest.raises(ValueError, match="quantize of an fp8 spec has no"):
            dllm_kernels.quantize(x, QuantSpec(8, type="float"), backend=backend)


def test_env_var_applies_where_the_op_has_that_backend(no_env) -> None:
    x = torch.randn(4, 16)
    no_env.setenv(dispatch.BACKEND_ENV, "torch")
    assert dispatch.resolve_backend("auto", [x], dispatch.BACKENDS) == "torch"
    assert dispatch.resolve_backend("auto", [x]) == "cpu"  # the GEMMs have no torch backend
    no_env.setenv(dispatch.BACKEND_ENV, "triton")
    assert dispatch.resolve_backend("auto", [x], ("numba", "torch")) == "numba"
    no_env.setenv(dispatch.BACKEND_ENV, "cuda")
    with pytest.raises(ValueError, match=dispatch.BACKEND_ENV):
        dllm_kernels.pack(torch.zeros(2, 8, dtype=torch.int8), 4)


def test_torch_backend_runs_on_any_device(no_env) -> None:
    """Without a Numba or Triton kernel for the device, auto runs the torch implementation."""
    x = torch.empty(4, 16, device="meta")
    codes, scale, zero = dllm_kernels.quantize(x, QuantSpec(4, False, "group", 8))
    assert codes.device.type == "meta" and (codes.dtype, scale.shape, zero.shape) == (
        torch.uint8,
        (4, 2),
        (4, 2),
    )
    with pytest.raises(ValueError, match="runs on CPU tensors"):
        dllm_kernels.quantize(x, QuantSpec(4), backend="numba")


def test_a_backend_the_op_lacks_raises(no_env) -> None:
    i8, i32 = torch.zeros(8, 8, dtype=torch.int8), torch.zeros(8, 1, dtype=torch.int32)
    calls = {
        "dequantize": lambda: dllm_kernels.dequantize(
            i8, torch.ones(8, 1), None, QuantSpec(4), backend="triton"
        ),
        "pack": lambda: dllm_kernels.pack(i8, 4, backend="triton"),
        "unpack": lambda: dllm_kernels.unpack(i32, 4, 8, backend="triton"),
        "pack_rows": lambda: dllm_kernels.pack_rows(i8, 4, backend="triton"),
        "unpack_rows": lambda: dllm_kernels.unpack_rows(i32.t(), 4, 8, backend="triton"),
        "int8_gemm": lambda: dllm_kernels.int8_gemm(i8, torch.ones(8), i8, torch.ones(8), backend="torch"),
    }
    for op, call in calls.items():
        with pytest.raises(ValueError, match=f"{op} has no '(triton|torch)' backend"):
            call()


@pytest.mark.parametrize(
    ("x", "spec", "message"),
    [
        (torch.zeros(4, 8, dtype=torch.int32), QuantSpec(4), "x must have dtype"),
        (torch.zeros(8), QuantSpec(4), "x must be 2-D"),
        (torch.zeros(0, 8), QuantSpec(4), "non-empty"),
        (torch.zeros(4, 12), QuantSpec(4, granularity="group", group_size=8), "not divisible"),
        (torch.zeros(4, 8), {"bits": 4}, "spec must be a dllm_kernels.QuantSpec"),
    ],
)
def test_quantize_validation_is_the_same_on_every_backend(triton_device, x, spec, message: str) -> None:
    for backend in QUANT_BACKENDS:
        with pytest.raises(ValueError, match=message):
            dllm_kernels.quantize(x.to(_device(backend, triton_device)), spec, backend=backend)
        with pytest.raises(ValueError, match=message):
            dllm_kernels.fake_quantize(x.to(_device(backend, triton_device)), spec, backend=backend)


def test_dequantize_validation_is_the_same_on_every_backend() -> None:
    spec = QuantSpec(4, False, "group", 8)
    codes, scale, zero = dllm_kernels.quantize(torch.randn(3, 16), spec)
    cases = [
        ((codes.view(torch.int8), scale, zero, spec), "codes must have dtype uint8 for this asymmetric spec"),
        ((codes, scale[:, :1], zero, spec), r"scale must have shape \[3, 2\]"),
        ((codes, scale, None, spec), "needs the int32 zero point"),
        ((codes.view(torch.int8), scale, zero, QuantSpec(4, True, "group", 8)), "zero must be None"),
        ((codes, scale, zero.to(torch.int64), spec), "zero must have dtype int32"),
        ((codes, torch.ones(1), None, QuantSpec(8, type="float")), "must have dtype float8_e4m3fn"),
    ]
    for args, message in cases:
        for backend in PACK_BACKENDS if not args[3].is_fp8 else ("torch",):
            with pytest.raises(ValueError, match=message):
                dllm_kernels.dequantize(*args, backend=backend)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: dllm_kernels.pack(torch.full((2, 4), 8, dtype=torch.int8), 4, backend=b), r"in \[-8, 7\]"),
        (
            lambda b: dllm_kernels.pack(torch.full((2, 4), 16, dtype=torch.uint8), 4, backend=b),
            r"in \[0, 15\]",
        ),
        (lambda b: dllm_kernels.pack(torch.zeros(2, 4, dtype=torch.int64), 4, backend=b), "int8/uint8"),
        (lambda b: dllm_kernels.pack(torch.zeros(2, 4, dtype=torch.int8), 5, backend=b), "bits must be"),
        (lambda b: dllm_kernels.pack_rows(torch.zeros(4, dtype=torch.int8), 4, backend=b), "2-D"),
        (lambda b: dllm_kernels.unpack(torch.zeros(2, 3, dtype=torch.int32), 4, 8, backend=b), r"\[\*, 1\]"),
        (lambda b: dllm_kernels.unpack(torch.zeros(2, 1, dtype=torch.int32), 4, -1, backend=b), "n_cols"),
        (
            lambda b: dllm_kernels.unpack_rows(torch.zeros(2, 3, dtype=torch.int32), 3, 8, backend=b),
            r"\[1, \*\]",
        ),
        (
            lambda b: dllm_kernels.unpack_rows(torch.zeros(1, 3, dtype=torch.int32), 3, 8, 1, backend=b),
            "bool",
        ),
    ],
)
def test_pack_validation_is_the_same_on_every_backend(call, message: str) -> None:
    for backend in PACK_BACKENDS:
        with pytest.raises(ValueError, match=message):
            call(backend)


@given(
    bits=st.sampled_from((2, 3, 4, 8)),
    symmetric=st.booleans(),
    rows=st.integers(0, 7),
    cols=st.integers(0, 70),
    seed=st.integers(0, 2**31 - 1),
)
def test_pack_ops_agree_across_backends(bits: int, symmetric: bool, rows: int, cols: int, seed: int) -> None:
    """torch packs (both dims) into the reference's words and unpacks them back, straddling words included."""
    rng = np.random.default_rng(seed)
    half = 1 << (bits - 1)
    if symmetric:
        codes = torch.from_numpy(rng.integers(-half, half, size=(rows, cols)).astype(np.int8))
    else:
        codes = torch.from_numpy(rng.integers(0, 2 * half, size=(rows, cols)).astype(np.uint8))
    words = torch.from_numpy(ref.pack(codes.numpy(), bits))
    row_words = torch.from_numpy(ref.pack_rows(codes.numpy(), bits))
    for backend in PACK_BACKENDS:
        assert torch.equal(dllm_kernels.pack(codes, bits, backend=backend), words)
        assert torch.equal(dllm_kernels.unpack(words, bits, cols, symmetric, backend=backend), codes)
        assert torch.equal(dllm_kernels.pack_rows(codes, bits, backend=backend), row_words)
        assert torch.equal(dllm_kernels.unpack_rows(row_words, bits, rows, symmetric, backend=backend), codes)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_fake_quantize_keeps_dtype_and_agrees_across_backends(triton_device, dtype: torch.dtype) -> None:
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(2)).to(dtype)
    spec = QuantSpec(3, False, "group", 16)
    want = torch.from_numpy(ref.fake_quantize(x.float().numpy(), spec)).to(dtype)
    for backend in QUANT_BACKENDS:
        out = dllm_kernels.fake_quantize(x.to(_device(backend, triton_device)), spec, backend=backend)
        assert out.dtype == dtype and torch.equal(out.cpu(), want)


def test_any_strides_are_accepted() -> None:
    x = torch.randn(32, 6).t()
    spec = QuantSpec(4, False, "group", 8)
    want = dllm_kernels.quantize(x.contiguous(), spec)
    for backend in PACK_BACKENDS:
        for got, exp in zip(dllm_kernels.quantize(x, spec, backend=backend), want, strict=True):
            assert torch.equal(got, exp)
    codes = want[0]
    assert torch.equal(
        dllm_kernels.pack(codes.t(), 4, backend="torch"), dllm_kernels.pack(codes.t().contiguous(), 4)
    )


@pytest.mark.gpu
def test_gpu_auto_picks_triton_where_it_has_a_kernel_else_torch(no_env, make_matrix) -> None:
    x = torch.from_numpy(make_matrix(0, 33, 256, "outliers")).cuda()
    assert dispatch.resolve_backend("auto", [x], dispatch.BACKENDS) == "triton"
    assert dispatch.resolve_backend("auto", [x], ("numba", "torch")) == "torch"
    spec = QuantSpec(4, False, "group", 32)
    codes, scale, zero = dllm_kernels.quantize(x, spec)
    want = ref.quantize(x.cpu().numpy(), spec)
    assert all(
        torch.equal(g.cpu(), torch.from_numpy(w)) for g, w in zip((codes, scale, zero), want, strict=True)
    )
    assert torch.equal(
        dllm_kernels.dequantize(codes, scale, zero, spec).cpu(), torch.from_numpy(ref.dequantize(*want, spec))
    )
    packed = dllm_kernels.pack(codes, 4)
    assert packed.is_cuda and torch.equal(packed.cpu(), torch.from_numpy(ref.pack(want[0], 4)))
    assert torch.equal(dllm_kernels.unpack(packed, 4, 256, symmetric=False), codes)
    zp = dllm_kernels.pack_rows(zero.to(torch.uint8), 4)
    assert torch.equal(zp.cpu(), torch.from_numpy(ref.pack_rows(want[2].astype(np.uint8), 4)))
    fp8 = QuantSpec(8, granularity="channel", type="float")
    for got, exp in zip(dllm_kernels.quantize(x, fp8), dllm_kernels.quantize(x.cpu(), fp8), strict=True):
        assert (got is None and exp is None) or torch.equal(got.cpu().float(), exp.float())
