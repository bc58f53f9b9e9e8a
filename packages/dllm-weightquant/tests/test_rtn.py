"""RTN and the torch grid: bit-exact agreement with dllm_kernels, clip search and ratio, input validation."""

from __future__ import annotations

import dllm_kernels
import pytest
import torch
from dllm_calib import get_method
from dllm_kernels import QuantSpec, torch_grid
from dllm_weightquant import ClipSearch, RTNConfig, rtn_quantize
from dllm_weightquant.grid import search_params
from dllm_weightquant.rtn import fake_quantize_weight, weight_cells
from hypothesis import given
from hypothesis import strategies as st

specs = st.builds(
    lambda bits, sym, gran: QuantSpec(bits, sym, gran, 16 if gran == "group" else None),
    st.sampled_from([2, 3, 4, 8]),
    st.booleans(),
    st.sampled_from(["channel", "group", "tensor"]),
)


@given(spec=specs, seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3), zero_rows=st.booleans())
def test_grid_matches_kernels_bit_for_bit(spec: QuantSpec, seed: int, scale: float, zero_rows: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 48, generator=g) * scale + torch.rand(1, generator=g) * scale
    if zero_rows:
        w[::3] = 0.0  # all-zero cells take the eps scale
    codes, ksc, kz = dllm_kernels.quantize(w, spec)
    cells = weight_cells(w, spec)
    s, z = search_params(cells, spec.bits, spec.symmetric, None)
    zc = None if z is None else z[..., None]
    signed = torch_grid.encode(cells, s[..., None], zc, spec.bits)
    deq = torch_grid.decode(signed, s[..., None], zc)
    assert torch.equal(deq.reshape(w.shape), dllm_kernels.dequantize(codes, ksc, kz, spec))
    mine = signed.reshape(w.shape)
    if z is not None:
        mine, z = torch_grid.to_unsigned(mine, z, spec.bits)
    assert torch.equal(mine, codes)
    assert torch.equal(s.reshape(ksc.shape), ksc)
    if kz is not None:
        assert z is not None and torch.equal(z.reshape(kz.shape), kz)
    assert torch.equal(fake_quantize_weight(w, spec), dllm_kernels.fake_quantize(w, spec))


@given(spec=specs, seed=st.integers(0, 2**31 - 1))
def test_rtn_without_clip_is_the_kernel_quantizer(spec: QuantSpec, seed: int) -> None:
    w = torch.randn(6, 32, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)
    q = rtn_quantize(w, None, spec)
    assert torch.equal(q.dequantize(), dllm_kernels.fake_quantize(w.float(), spec))
    assert torch.equal(q.codes, dllm_kernels.quantize(w.float(), spec)[0])


@given(spec=specs, seed=st.integers(0, 2**31 - 1), norm=st.sampled_from([2.0, 2.4]))
def test_clip_search_never_worse_per_cell(spec: QuantSpec, seed: int, norm: float) -> None:
    w = torch.randn(5, 64, generator=torch.Generator().manual_seed(seed)) ** 3  # heavy tails: clipping pays
    clip = ClipSearch(grid=20, max_shrink=0.8, norm=norm)
    plain = weight_cells(rtn_quantize(w, None, spec).dequantize() - w, spec).abs().pow(norm).sum(-1)
    clipped = (
        weight_cells(rtn_quantize(w, None, spec, RTNConfig(clip)).dequantize() - w, spec)
        .abs()
        .pow(norm)
        .sum(-1)
    )
    assert bool((clipped <= plain * (1 + 1e-6) + 1e-12).all())


def test_clip_search_helps_heavy_tailed_groups() -> None:
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(0)) ** 3
    spec = QuantSpec(3, True, "group", 32)
    plain = (rtn_quantize(w, None, spec).dequantize() - w).pow(2).sum()
    clipped = (rtn_quantize(w, None, spec, RTNConfig(ClipSearch())).dequantize() - w).pow(2).sum()
    assert clipped < 0.95 * plain


@given(spec=specs, seed=st.integers(0, 2**31 - 1))
def test_clip_ratio_one_is_todays_result(spec: QuantSpec, seed: int) -> None:
    w = torch.randn(6, 32, generator=torch.Generator().manual_seed(seed)) ** 3
    q = rtn_quantize(w, None, spec, RTNConfig(clip_ratio=1.0))
    codes, scale, zero = dllm_kernels.quantize(w, spec)
    assert torch.equal(q.codes, codes) and torch.equal(q.scale, scale)
    assert (q.zero is None and zero is None) or torch.equal(q.zero, zero)


@given(spec=specs, seed=st.integers(0, 2**31 - 1), ratio=st.floats(0.05, 1.0))
def test_clip_ratio_quantizes_with_the_cell_range_times_the_ratio(
    spec: QuantSpec, seed: int, ratio: float
) -> None:
    """Codes, scales and zeros equal the plain grid built on each cell's ``[ratio * min, ratio * max]``."""
    w = torch.randn(6, 32, generator=torch.Generator().manual_seed(seed)) + 0.3
    cells = weight_cells(w, spec)
    lo, hi = torch.aminmax(cells, dim=-1)
    scale, zero = torch_grid.scale_zero(lo * ratio, hi * ratio, spec.bits, spec.symmetric)
    zc = None if zero is None else zero[..., None]
    codes = torch_grid.encode(cells, scale[..., None], zc, spec.bits).reshape(w.shape)
    q = rtn_quantize(w, None, spec, RTNConfig(clip_ratio=ratio))
    shape = q.scale.shape
    if zero is not None:
        codes, zero = torch_grid.to_unsigned(codes, zero.reshape(shape), spec.bits)
        assert q.zero is not None and torch.equal(q.zero, zero)
    assert torch.equal(q.codes, codes) and torch.equal(q.scale, scale.reshape(shape))


def test_clip_ratio_errors_and_recipe_step() -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        RTNConfig(clip=ClipSearch(), clip_ratio=0.8)
    for bad in (0.0, 1.5, True):
        with pytest.raises(ValueError, match=r"RTNConfig\.clip_ratio must be a number in \(0.0, 1.0\]"):
            RTNConfig(clip_ratio=bad)
    assert get_method("rtn").configure({"clip_ratio": 0.8}) == RTNConfig(clip_ratio=0.8)


def test_clip_ratios() -> None:
    assert ClipSearch(grid=10, max_shrink=0.5).ratios() == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6])
    assert ClipSearch(grid=100, max_shrink=0.8).ratios()[-1] == pytest.approx(0.21)
    with pytest.raises(ValueError, match="max_shrink"):
        ClipSearch(max_shrink=1.0)
    with pytest.raises(ValueError, match="grid"):
        ClipSearch(grid=0)


@pytest.mark.parametrize(
    ("weight", "spec", "match"),
    [
        (torch.tensor([[1.0, float("nan")]]), QuantSpec(4), "NaN"),
        (torch.tensor([[1.0, float("inf")]]), QuantSpec(4), "NaN or Inf"),
        (torch.ones(2, 24), QuantSpec(4, True, "group", 16), "does not divide the input width 24"),
        (torch.ones(2, 16), QuantSpec(8, True, "channel", type="float"), "fp8"),
        (torch.ones(2, 16), QuantSpec(8, True, "token"), "token"),
        (torch.ones(16), QuantSpec(4), "2-D"),
        (torch.ones(2, 16, dtype=torch.int32), QuantSpec(4), "float"),
    ],
)
def test_rtn_rejects_bad_input(weight: torch.Tensor, spec: QuantSpec, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rtn_quantize(weight, None, spec)


def test_unsupported_bits_are_rejected_by_the_spec() -> None:
    with pytest.raises(ValueError, match="bits"):
        QuantSpec(5)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "spec",
    [
        QuantSpec(4, True, "group", 128),
        QuantSpec(3, False, "group", 128),
        QuantSpec(8, False),
        QuantSpec(2, True, "tensor"),
    ],
)
def test_gpu_rtn_and_the_torch_grid_on_cuda_equal_the_cpu_result(spec: QuantSpec) -> None:
    """RTN through dllm_kernels.quantize (Triton on CUDA) and the torch grid (fake_quantize_weight,
    search_params) give the CPU bits."""
    w = torch.randn(256, 1024, generator=torch.Generator().manual_seed(0)) ** 3
    cpu, gpu = rtn_quantize(w, None, spec), rtn_quantize(w.cuda(), None, spec)
    assert torch.equal(gpu.packed, cpu.packed) and torch.equal(gpu.scale, cpu.scale)
    assert (cpu.zero is None and gpu.zero is None) or torch.equal(gpu.zero, cpu.zero)
    assert torch.equal(fake_quantize_weight(w.cuda(), spec).cpu(), fake_quantize_weight(w, spec))
    cells = weight_cells(w, spec)
    for got, want in zip(
        search_params(cells.cuda(), spec.bits, spec.symmetric, None),
        search_params(cells, spec.bits, spec.symmetric, None),
        strict=True,
    ):
        assert (got is None and want is None) or torch.equal(got.cpu(), want)
