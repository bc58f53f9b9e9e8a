"""Triton GEMM kernels (W{2,3,4,8}A16, W8A8, W4A8, W4A4) against the Numba reference and float64.

Runs compiled on CUDA or under the Triton interpreter on CPU (``triton_device`` fixture). Error bands,
against a float64 product of the dequantized *same* codes and scales: fp32 1e-5, fp16 2e-3, bf16 1e-2
(rounding to 2^-11 / 2^-8 dominates). For the integer GEMMs the measure is the relative Frobenius error
(only the output is rounded); W{b}A16 also rounds the dequantized weight to the activation dtype before the
MMA, so its error is taken relative to ``|| |x| @ |W|^T ||`` (immune to cancellation in a single dot).
Integer GEMMs with fp32 output must equal the Numba reference bit for bit (exact int32 accumulation, same
epilogue order).
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
BAND = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def _wna16_case(
    seed: int, m: int, n: int, k: int, bits: int, group: int, asym: bool, dtype: torch.dtype
) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, torch.Tensor | None, np.ndarray]:
    """Random x, packed codes, scale, zero and the float64 dequantized weight ``[N, K]``."""
    rng = np.random.default_rng(seed)
    hi = 1 << bits
    if asym:
        codes = rng.integers(0, hi, size=(n, k)).astype(np.uint8)
        zero = rng.integers(0, hi, size=(n, k // group)).astype(np.int32)
        u_minus_z = codes.astype(np.float64) - np.repeat(zero, group, axis=1)
    else:
        codes = rng.integers(-(hi // 2), hi // 2, size=(n, k)).astype(np.int8)
        zero = None
        u_minus_z = codes.astype(np.float64)
    scale = torch.from_numpy(rng.uniform(0.5, 1.5, size=(n, k // group)).astype(np.float32) / hi).to(dtype)
    w64 = u_minus_z * np.repeat(scale.double().numpy(), group, axis=1)
    x = torch.from_numpy(rng.standard_normal((m, k)).astype(np.float32)).to(dtype)
    return x, ref.pack(codes, bits), scale, None if zero is None else torch.from_numpy(zero), w64


def _rel(rel_fro, out: torch.Tensor, want: np.ndarray) -> float:
    assert torch.isfinite(out).all(), "kernel output has non-finite values (unwritten tile?)"
    return rel_fro(out.double().cpu().numpy(), want)


def _gemm_err(out: torch.Tensor, want: np.ndarray, x: torch.Tensor, w64: np.ndarray) -> float:
    """``||out - want|| / || |x| @ |W|^T ||``: the rounding error of each product, cancellation aside."""
    assert torch.isfinite(out).all(), "kernel output has non-finite values (unwritten tile?)"
    scale = np.linalg.norm(np.abs(x.double().cpu().numpy()) @ np.abs(w64).T)
    return float(np.linalg.norm(out.double().cpu().numpy() - want) / scale)


@given(
    data=st.data(),
    bits=st.sampled_from((2, 3, 4, 8)),
    n=st.integers(1, 80),
    n_groups=st.integers(1, 3),
    group=st.sampled_from((16, 32, 48, None)),
    asym=st.booleans(),
    dtype=st.sampled_from(FLOATS),
    seed=st.integers(0, 2**31),
)
def test_wna16_matches_reference(
    triton_device, token_counts, data, bits, n, n_groups, group, asym, dtype, seed
):
    m = data.draw(st.sampled_from(token_counts), label="m")
    k = group * n_groups if group else data.draw(st.integers(16, 130), label="k")
    x, packed, scale, zero, w64 = _wna16_case(seed, m, n, k, bits, group or k, asym, dtype)
    dev = triton_device
    out = dispatch.wna16_gemm(
        x.to(dev),
        torch.from_numpy(packed).to(dev),
        scale.to(dev),
        None if zero is None else zero.to(dev),
        bits,
        group,
        backend="triton",
    )
    assert out.dtype == dtype and out.shape == (m, n)
    numba_out = ref.wna16_gemm(
        x.float().numpy(), packed, scale.float().numpy(), None if zero is None else zero.numpy(), bits, group
    )
    assert _gemm_err(out, x.double().numpy() @ w64.T, x, w64) <= BAND[dtype]
    assert _gemm_err(out, numba_out, x, w64) <= BAND[dtype]


def test_wna16_reads_compressed_tensors_packing(triton_device, rel_fro):
    """The kernel decodes compressed-tensors' own ``pack_to_int32`` output (3-bit codes straddle words)."""
    pack_to_int32 = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers").pack_to_int32
    gen = torch.Generator().manual_seed(0)
    n, k, group = 24, 96, 32
    for bits in (3, 4):
        codes = torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (n, k), dtype=torch.int8, generator=gen)
        scale = torch.rand(n, k // group, generator=gen) + 0.5
        x = torch.randn(33, k, generator=gen)
        w64 = codes.double() * scale.double().repeat_interleave(group, dim=1)
        dev = triton_device
        out = dispatch.wna16_gemm(
            x.to(dev), pack_to_int32(codes, bits).to(dev), scale.to(dev), None, bits, group, backend="triton"
        )
        assert _rel(rel_fro, out, (x.double() @ w64.T).numpy()) <= BAND[torch.float32]


def _int_scales(rng: np.random.Generator, m: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(rng.uniform(1e-3, 1e-1, size=m).astype(np.float32)),
        torch.from_numpy(rng.uniform(1e-3, 1e-1, size=n).astype(np.float32)),
    )


@given(
    data=st.data(),
    kind=st.sampled_from(("w8a8", "w4a8", "w4a4")),
    n=st.integers(1, 80),
    k=st.integers(1, 200),
    out_dtype=st.sampled_from(FLOATS),
    seed=st.integers(0, 2**31),
)
def test_int_gemms_match_reference(triton_device, token_counts, rel_fro, data, kind, n, k, out_dtype, seed):
    m = data.draw(st.sampled_from(token_counts), label="m")
    rng = np.random.default_rng(seed)
    x_lo, x_hi = (-8, 8) if kind == "w4a4" else (-128, 128)
    xq = rng.integers(x_lo, x_hi, size=(m, k)).astype(np.int8)
    xs, ws = _int_scales(rng, m, n)
    if kind == "w8a8":
        wq = rng.integers(-128, 128, size=(n, k)).astype(np.int8)
        w_arg, fn, ref_fn = wq, dispatch.int8_gemm, ref.int8_gemm
    else:
        wq = rng.integers(-8, 8, size=(n, k)).astype(np.int8)
        w_arg = ref.pack(wq, 4)
        fn = dispatch.w4a8_gemm if kind == "w4a8" else dispatch.w4a4_gemm
        ref_fn = ref.w4a8_gemm if kind == "w4a8" else ref.w4a4_gemm
    dev = triton_device
    out = fn(
        torch.from_numpy(xq).to(dev),
        xs.to(dev),
        torch.from_numpy(w_arg).to(dev),
        ws.to(dev),
        out_dtype=out_dtype,
        backend="triton",
    )
    assert out.dtype == out_dtype and out.shape == (m, n)
    numba_out = ref_fn(xq, xs.numpy(), w_arg, ws.numpy())
    if out_dtype == torch.float32:
        np.testing.assert_array_equal(out.cpu().numpy(), numba_out)
    exact = (
        (xq.astype(np.float64) @ wq.astype(np.float64).T) * xs.double().numpy()[:, None] * ws.double().numpy()
    )
    assert _rel(rel_fro, out, exact) <= BAND[out_dtype]


def _valid_wna16(dev: str) -> dict:
    x = torch.randn(4, 64, device=dev)
    return {
        "x": x,
        "w_packed": torch.zeros(8, 8, dtype=torch.int32, device=dev),
        "scale": torch.ones(8, 2, device=dev),
        "zero": None,
        "bits": 4,
        "group_size": 32,
    }


BAD_WNA16 = {
    "bits": ({"bits": 5}, "bits must be one of"),
    "group": ({"group_size": 24}, "must divide K"),
    "packed shape": ({"w_packed": torch.zeros(8, 7, dtype=torch.int32)}, "w_packed must have shape"),
    "packed dtype": ({"w_packed": torch.zeros(8, 8, dtype=torch.int64)}, "w_packed must have dtype"),
    "scale shape": ({"scale": torch.ones(8, 3)}, "scale must have shape"),
    "x dtype": ({"x": torch.zeros(4, 64, dtype=torch.int32)}, "x must have dtype"),
    "x non-contiguous": ({"x": torch.randn(64, 4).t()}, "contiguous"),
    "zero range": ({"zero": torch.full((8, 2), 16, dtype=torch.int32)}, "unsigned zero points"),
    "device mismatch": ({"scale": torch.ones(8, 2, device="meta")}, "one device"),
}


@pytest.mark.parametrize("backend", ["triton", "numba"])
@pytest.mark.parametrize("case", sorted(BAD_WNA16))
def test_wna16_rejects_bad_input(triton_device, backend, case):
    """Both backends reject the same malformed inputs with a message naming the problem."""
    dev = triton_device if backend == "triton" else "cpu"
    if case == "zero range" and dev != "cpu":
        pytest.skip("value-range checks run for CPU tensors only")
    kwargs = _valid_wna16(dev)
    change, message = BAD_WNA16[case]
    kwargs.update({key: v.to(dev) if isinstance(v, torch.Tensor) and v.device.type != "meta" else v
                   for key, v in change.items()})  # fmt: skip
    with pytest.raises(ValueError, match=message):
        dispatch.wna16_gemm(**kwargs, backend=backend)


def test_int_gemms_reject_bad_input(triton_device):
    dev = triton_device
    xq = torch.zeros(4, 16, dtype=torch.int8, device=dev)
    xs, ws = torch.ones(4, device=dev), torch.ones(3, device=dev)
    wq = torch.zeros(3, 16, dtype=torch.int8, device=dev)
    packed = torch.zeros(3, 2, dtype=torch.int32, device=dev)
    with pytest.raises(ValueError, match="wq must have shape"):
        dispatch.int8_gemm(xq, xs, wq[:, :8].contiguous(), ws, backend="triton")
    with pytest.raises(ValueError, match="w_packed must have shape"):
        dispatch.w4a8_gemm(xq, xs, packed[:, :1].contiguous(), ws, backend="triton")
    with pytest.raises(ValueError, match="x_scale must have shape"):
        dispatch.int8_gemm(xq, xs[:3], wq, ws, backend="triton")
    with pytest.raises(ValueError, match="xq must have dtype"):
        dispatch.int8_gemm(xq.float(), xs, wq, ws, backend="triton")
    with pytest.raises(ValueError, match="out_dtype"):
        dispatch.int8_gemm(xq, xs, wq, ws, out_dtype=torch.int32, backend="triton")
    if dev == "cpu":
        with pytest.raises(ValueError, match=r"\[-8, 7\]"):
            dispatch.w4a4_gemm(xq + 9, xs, packed, ws, backend="triton")


# ---- compiled-only variants: bf16 activations and model-sized shapes ---------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("m", [1, 257, 1024])
def test_wna16_gpu_bf16_large(bits, m):
    n, k, group = 4096 + 96, 4096, 128
    x, packed, scale, _, w64 = _wna16_case(bits * 1000 + m, m, n, k, bits, group, False, torch.bfloat16)
    out = dispatch.wna16_gemm(x.cuda(), torch.from_numpy(packed).cuda(), scale.cuda(), None, bits, group)
    want = (x.cuda().double() @ torch.from_numpy(w64).cuda().T).cpu().numpy()
    assert _gemm_err(out, want, x, w64) <= BAND[torch.bfloat16]


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["w8a8", "w4a8"])
def test_int_gemm_gpu_large_exact(kind):
    m, n, k = 257, 1000, 4096
    rng = np.random.default_rng(1)
    xq = torch.from_numpy(rng.integers(-128, 128, size=(m, k)).astype(np.int8))
    xs, ws = _int_scales(rng, m, n)
    wq = torch.from_numpy(rng.integers(-128 if kind == "w8a8" else -8, 128 if kind == "w8a8" else 8, (n, k)))
    wq = wq.to(torch.int8)
    w_arg = wq if kind == "w8a8" else torch.from_numpy(ref.pack(wq.numpy(), 4))
    fn = dispatch.int8_gemm if kind == "w8a8" else dispatch.w4a8_gemm
    out = fn(xq.cuda(), xs.cuda(), w_arg.cuda(), ws.cuda())
    acc = (xq.cuda().double() @ wq.cuda().double().T).float()  # exact integers, rounded like the kernel's
    torch.testing.assert_close(out, acc * xs.cuda()[:, None] * ws.cuda()[None, :], rtol=0, atol=0)
