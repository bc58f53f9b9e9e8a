"""The integer grid is one grid: its torch, Numba and Triton implementations agree bit for bit.

Spec-driven quantize (every granularity), per-token quantize with clip ratios, dequantize, and the torch grid
functions themselves, against the Numba reference. Triton runs interpreted on CPU and compiled on a GPU (the
``gpu`` tests, larger shapes, also the torch grid on CUDA, where a division by a Python scalar would not be
IEEE).
"""

from __future__ import annotations

import dllm_kernels
import numpy as np
import pytest
import torch
from dllm_kernels import QuantSpec, torch_grid
from dllm_kernels import reference as ref
from dllm_kernels.reference import grid as ref_grid
from hypothesis import given
from hypothesis import strategies as st

BITS = (2, 3, 4, 8)
GRANULARITIES = ("tensor", "channel", "group", "token")
KINDS = ("normal", "outliers", "zero_rows", "ties", "positive")
CLIPS = (1.0, 0.9, 0.75, 0.5, 0.3)
FLOATS = (torch.float32, torch.bfloat16, torch.float16)
BACKENDS = ("numba", "torch", "triton")


def _spec(bits: int, symmetric: bool, granularity: str) -> QuantSpec:
    return QuantSpec(bits, symmetric, granularity, 8 if granularity == "group" else None)


def _assert_same(got: tuple, want: tuple) -> None:
    """Equal codes, scale and zero (dtypes included); ``want`` numpy (reference) or tensors."""
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g is None
            continue
        w = torch.from_numpy(w) if isinstance(w, np.ndarray) else w.cpu()
        assert g.dtype == w.dtype and g.shape == w.shape
        assert torch.equal(g.cpu(), w)


def _edge_matrix(bits: int, symmetric: bool, rows: int = 6, cols: int = 32) -> torch.Tensor:
    """Rows of 8-column groups that hit every edge of the grid (float32):

    all-zero cells; cells whose scale is exactly 1 so that half-integers are rounding ties (symmetric:
    absmax ``(2^b - 1) / 2``; asymmetric: range ``[-2^(b-1) - 1/2, 2^(b-1) - 3/2]``, whose zero point
    ``rint(1/2) = 0`` is a tie too); positive-only and negative-only cells; an outlier cell.
    """
    half = 1 << (bits - 1)
    g = torch.Generator().manual_seed(bits * 2 + symmetric)
    x = torch.randn(rows, cols, generator=g)
    x[0] = 0.0
    x[1, :8] = 0.0
    top = (2 * half - 1) / 2
    ties = torch.arange(8, dtype=torch.float32) - 3.5  # -3.5 .. 3.5
    if symmetric:
        x[2, :8] = torch.cat([torch.tensor([top]), ties[1:].clamp(-top, top)])
    else:
        x[2, :8] = torch.cat(
            [torch.tensor([-half - 0.5, half - 1.5]), ties[2:].clamp(-half - 0.5, half - 1.5)]
        )
    x[2, 8:16] = x[2, :8] * 0.25
    x[3] = x[3].abs() + 0.5
    x[4] = -x[4].abs() - 0.5
    x[5, 3] = 300.0
    return x


@given(
    bits=st.sampled_from(BITS),
    symmetric=st.booleans(),
    granularity=st.sampled_from(GRANULARITIES),
    rows=st.integers(1, 9),
    groups=st.integers(1, 5),
    kind=st.sampled_from(KINDS),
    magnitude=st.sampled_from((1e-3, 1.0, 300.0)),
    dtype=st.sampled_from(FLOATS),
    seed=st.integers(0, 2**31 - 1),
)
def test_spec_quantize_is_one_grid(
    triton_device, make_matrix, bits, symmetric, granularity, rows, groups, kind, magnitude, dtype, seed
) -> None:
    """quantize on numba, torch and Triton (on the scale cells as rows) equals the Numba reference; so does
    dequantize on numba and torch."""
    spec = _spec(bits, symmetric, granularity)
    x = torch.from_numpy(make_matrix(seed, rows, 8 * groups, kind, magnitude)).to(dtype)
    want = ref.quantize(x.float().numpy(), spec)
    for backend in BACKENDS:
        dev = triton_device if backend == "triton" else "cpu"
        _assert_same(dllm_kernels.quantize(x.to(dev), spec, backend=backend), want)
    values = torch.from_numpy(ref.dequantize(*want, spec))
    stored = [None if t is None else torch.from_numpy(t) for t in want]
    for backend in ("numba", "torch"):
        assert torch.equal(dllm_kernels.dequantize(*stored, spec, backend=backend), values)


@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 20),
    cols=st.integers(1, 70),
    bits=st.sampled_from(BITS),
    symmetric=st.booleans(),
    clip=st.sampled_from(CLIPS),
    kind=st.sampled_from(KINDS),
    dtype=st.sampled_from(FLOATS),
)
def test_per_token_with_clip_is_one_grid(
    triton_device, make_matrix, seed, rows, cols, bits, symmetric, clip, kind, dtype
) -> None:
    """quantize_per_token (signed storage, clip ratios) on torch and Triton equals the Numba reference."""
    x = torch.from_numpy(make_matrix(seed, rows, cols, kind, 3.0)).to(dtype)
    want = ref.quantize_per_token(x.float().numpy(), bits, symmetric, clip)
    _assert_same(dllm_kernels.quantize_per_token(x, bits, symmetric, clip, backend="torch"), want)
    got = dllm_kernels.quantize_per_token(x.to(triton_device), bits, symmetric, clip, backend="triton")
    _assert_same(got, want)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_edge_cells_are_one_grid(triton_device, bits: int, symmetric: bool, granularity: str) -> None:
    """All-zero cells, exact .5 ties (codes and zero points), one-signed cells, outliers: every backend."""
    x = _edge_matrix(bits, symmetric)
    spec = _spec(bits, symmetric, granularity)
    want = ref.quantize(x.numpy(), spec)
    for backend in BACKENDS:
        dev = triton_device if backend == "triton" else "cpu"
        _assert_same(dllm_kernels.quantize(x.to(dev), spec, backend=backend), want)
    assert torch.equal(
        dllm_kernels.fake_quantize(x, spec, backend="torch"),
        torch.from_numpy(ref.fake_quantize(x.numpy(), spec)),
    )


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_ties_round_half_to_even(bits: int, symmetric: bool) -> None:
    """On a scale-1 cell half-integers go to the even neighbour (the asymmetric zero point rint(1/2) = 0)."""
    half = 1 << (bits - 1)
    if symmetric:
        lo, hi = torch.tensor(-(2 * half - 1) / 2), torch.tensor((2 * half - 1) / 2)
    else:
        lo, hi = torch.tensor(-half - 0.5), torch.tensor(half - 1.5)
    scale, zero = torch_grid.scale_zero(lo, hi, bits, symmetric)
    assert scale.item() == 1.0 and (zero is None or zero.item() == 0)
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5])
    even = [min(max(v, -half), half - 1) for v in (0, 2, 2, 0, -2, -2)]
    assert torch_grid.encode(x, scale, zero, bits).tolist() == even


@given(
    seed=st.integers(0, 2**31 - 1),
    bits=st.sampled_from(BITS),
    symmetric=st.booleans(),
    clip=st.sampled_from(CLIPS),
    magnitude=st.sampled_from((1e-3, 1.0, 300.0)),
)
def test_torch_grid_functions_match_the_reference_grid(seed, bits, symmetric, clip, magnitude) -> None:
    """scale_zero (with a clip ratio, zero-width cells included), encode, decode, to_unsigned."""
    rng = np.random.default_rng(seed)
    lo = (rng.standard_normal(40) * magnitude).astype(np.float32)
    hi = (rng.standard_normal(40) * magnitude).astype(np.float32)
    lo[:5], hi[:5] = 0.0, 0.0
    hi[5:10] = lo[5:10]
    scale, zero = torch_grid.scale_zero(torch.from_numpy(lo), torch.from_numpy(hi), bits, symmetric, clip)
    r_scale, r_zero = ref_grid.scale_zero(lo, hi, bits, symmetric, clip)
    _assert_same((scale, zero), (r_scale, r_zero))
    x = (rng.standard_normal((40, 16)) * magnitude).astype(np.float32)
    codes = torch_grid.encode(
        torch.from_numpy(x), scale[:, None], None if zero is None else zero[:, None], bits
    )
    r_codes = np.empty(x.shape, dtype=np.int8)
    r_zero_f = np.zeros_like(r_scale) if r_zero is None else r_zero.astype(np.float32)
    half = 1 << (bits - 1)
    ref_grid.encode_kernel(
        x, r_scale[:, None], r_zero_f[:, None], np.float32(-half), np.float32(half - 1), r_codes
    )
    assert torch.equal(codes, torch.from_numpy(r_codes))
    if zero is not None:
        codes, zero = torch_grid.to_unsigned(codes, zero, bits)
        r_codes, r_zero = ref_grid.to_unsigned(r_codes, r_zero, bits)
        _assert_same((codes, zero), (r_codes, r_zero))
    r_values = np.empty(x.shape, dtype=np.float32)
    r_zero_i = np.zeros(40, dtype=np.int32) if r_zero is None else r_zero
    ref_grid.decode_kernel(r_codes, r_scale[:, None], r_zero_i[:, None], r_values)
    values = torch_grid.decode(codes, scale[:, None], None if zero is None else zero[:, None])
    assert torch.equal(values, torch.from_numpy(r_values))


# --- compiled on a GPU ---------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_gpu_spec_quantize_is_one_grid(make_matrix, bits: int, symmetric: bool) -> None:
    """Triton (compiled) and torch on CUDA equal the Numba reference on a model-sized bf16 weight with
    all-zero cells, every granularity; dequantize on CUDA too."""
    x = torch.from_numpy(make_matrix(bits, 257, 4096, "outliers", 3.0)).to(torch.bfloat16)
    x[::7, :256] = 0.0
    for granularity in GRANULARITIES:
        spec = QuantSpec(bits, symmetric, granularity, 128 if granularity == "group" else None)
        want = ref.quantize(x.float().numpy(), spec)
        for backend in ("triton", "torch"):
            _assert_same(dllm_kernels.quantize(x.cuda(), spec, backend=backend), want)
        stored = [None if t is None else torch.from_numpy(t).cuda() for t in want]
        values = dllm_kernels.dequantize(*stored, spec)
        assert torch.equal(values.cpu(), torch.from_numpy(ref.dequantize(*want, spec)))


@pytest.mark.gpu
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_gpu_per_token_with_clip_is_one_grid(make_matrix, bits: int, symmetric: bool) -> None:
    """quantize_per_token on CUDA (Triton and torch) equals the reference for every clip ratio."""
    x = torch.from_numpy(make_matrix(bits, 257, 3584, "outliers", 3.0)).to(torch.bfloat16)
    for clip in CLIPS:
        want = ref.quantize_per_token(x.float().numpy(), bits, symmetric, clip)
        for backend in ("triton", "torch"):
            _assert_same(
                dllm_kernels.quantize_per_token(x.cuda(), bits, symmetric, clip, backend=backend), want
            )


@pytest.mark.gpu
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_gpu_edge_cells_are_one_grid(bits: int, symmetric: bool) -> None:
    """The edge cells (zeros, ties, one-signed, outlier) on CUDA, and the torch grid functions there."""
    x = _edge_matrix(bits, symmetric)
    for granularity in GRANULARITIES:
        spec = _spec(bits, symmetric, granularity)
        want = ref.quantize(x.numpy(), spec)
        for backend in ("triton", "torch"):
            _assert_same(dllm_kernels.quantize(x.cuda(), spec, backend=backend), want)
    lo, hi = torch.aminmax(x.reshape(-1, 8), dim=-1)
    for clip in CLIPS:
        got = torch_grid.scale_zero(lo.cuda(), hi.cuda(), bits, symmetric, clip)
        _assert_same(got, ref_grid.scale_zero(lo.numpy(), hi.numpy(), bits, symmetric, clip))
