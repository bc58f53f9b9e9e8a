"""quantize / dequantize / fake_quantize: ranges, error bounds, compressed-tensors parity, bad input."""

from __future__ import annotations

import dllm_kernels
import numpy as np
import pytest
import torch
from compressed_tensors.quantization.lifecycle.forward import fake_quantize as ct_fake_quantize
from compressed_tensors.quantization.utils import calculate_qparams
from dllm_kernels import QuantSpec
from dllm_kernels import reference as ref
from hypothesis import given
from hypothesis import strategies as st

KINDS = ["normal", "outliers", "zero_rows", "ties", "positive"]


@st.composite
def int_cases(draw: st.DrawFn) -> tuple[QuantSpec, int, int, int, str, float]:
    """(spec, seed, rows, cols, kind, magnitude) with cols divisible by the group size."""
    gran = draw(st.sampled_from(["tensor", "channel", "token", "group"]))
    group = draw(st.sampled_from([4, 8, 32])) if gran == "group" else None
    spec = QuantSpec(draw(st.sampled_from([2, 3, 4, 8])), draw(st.booleans()), gran, group)
    rows = draw(st.integers(1, 9))
    cols = (group or 1) * draw(st.integers(1, 6)) if group else draw(st.integers(1, 70))
    kind = draw(st.sampled_from(KINDS))
    magnitude = draw(st.sampled_from([1e-3, 1.0, 300.0]))
    return spec, draw(st.integers(0, 2**31)), rows, cols, kind, magnitude


def expand(scale: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Broadcast a scale/zero of any granularity to [rows, cols]."""
    a = scale.reshape(1, 1) if scale.ndim == 1 else scale
    return np.repeat(a, cols // a.shape[1], axis=1) * np.ones((rows, 1), dtype=a.dtype)


def ct_reference(x: np.ndarray, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """compressed-tensors' own min/max -> calculate_qparams -> fake_quantize on the same float32 input."""
    xt = torch.from_numpy(x)
    if spec.granularity == "tensor":
        lo, hi = torch.aminmax(xt)
    elif spec.granularity == "group":
        grouped = xt.unflatten(-1, (x.shape[1] // spec.group_size, spec.group_size))
        lo, hi = grouped.amin(-1), grouped.amax(-1)
    else:
        lo, hi = xt.amin(1, keepdim=True), xt.amax(1, keepdim=True)
    args = spec.to_compressed_tensors()
    scale, zp = calculate_qparams(lo, hi, args)
    return ct_fake_quantize(xt, scale, zp, args), scale, zp


@given(int_cases())
def test_codes_in_range_shapes_and_dtypes(make_matrix, case) -> None:
    spec, seed, rows, cols, kind, mag = case
    x = make_matrix(seed, rows, cols, kind, mag)
    codes, scale, zero = ref.quantize(x, spec)
    assert codes.shape == x.shape
    assert codes.dtype == (np.int8 if spec.symmetric else np.uint8)
    assert spec.qmin <= codes.min() and codes.max() <= spec.qmax
    want = {"tensor": (1,), "channel": (rows, 1), "token": (rows, 1)}.get(spec.granularity)
    assert scale.shape == (want or (rows, cols // (spec.group_size or 1)))
    assert scale.dtype == np.float32 and np.all(scale > 0) and np.all(np.isfinite(scale))
    if spec.symmetric:
        assert zero is None
    else:
        assert zero.dtype == np.int32 and zero.shape == scale.shape
        assert zero.min() >= 0 and zero.max() <= spec.qmax


@given(int_cases())
def test_fake_quant_error_is_at_most_half_a_step(make_matrix, case) -> None:
    """|x - fq(x)| <= scale/2 everywhere: the scales are chosen so that no value is clipped by more."""
    spec, seed, rows, cols, kind, mag = case
    x = make_matrix(seed, rows, cols, kind, mag)
    codes, scale, zero = ref.quantize(x, spec)
    fq = ref.dequantize(codes, scale, zero, spec)
    assert fq.dtype == np.float32 and np.all(np.isfinite(fq))
    step = expand(scale, rows, cols).astype(np.float64)
    bound = 0.5 * step * (1 + 1e-5) + 4 * np.finfo(np.float32).eps * np.abs(x)
    assert np.all(np.abs(x.astype(np.float64) - fq) <= bound)
    np.testing.assert_array_equal(ref.fake_quantize(x, spec), fq)


@given(int_cases())
def test_bit_exact_with_compressed_tensors(make_matrix, case) -> None:
    """Same scales, zero points and fake-quantized values as compressed-tensors (round half to even)."""
    spec, seed, rows, cols, kind, mag = case
    x = make_matrix(seed, rows, cols, kind, mag)
    codes, scale, zero = ref.quantize(x, spec)
    ct_fq, ct_scale, ct_zp = ct_reference(x, spec)
    np.testing.assert_array_equal(scale, ct_scale.numpy().reshape(scale.shape))
    if not spec.symmetric:
        np.testing.assert_array_equal(zero - (1 << (spec.bits - 1)), ct_zp.numpy().reshape(zero.shape))
    np.testing.assert_array_equal(ref.dequantize(codes, scale, zero, spec), ct_fq.numpy())


def test_rounding_is_half_to_even(make_matrix) -> None:
    x = np.array([[7.5, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, -7.5]], dtype=np.float32)
    codes, scale, _ = ref.quantize(x, QuantSpec(4, granularity="token"))
    assert scale[0, 0] == 1.0
    np.testing.assert_array_equal(codes, [[7, 0, 2, 2, 0, -2, -2, -8]])


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("gran", ["tensor", "channel", "group"])
def test_all_zero_input_gives_zeros_not_nan(symmetric: bool, gran: str) -> None:
    spec = QuantSpec(4, symmetric, gran, 8 if gran == "group" else None)
    x = np.zeros((3, 16), dtype=np.float32)
    codes, scale, zero = ref.quantize(x, spec)
    assert np.all(scale > 0)
    out = ref.dequantize(codes, scale, zero, spec)
    np.testing.assert_array_equal(out, np.zeros_like(x))


def test_token_equals_channel_and_per_token_helper(make_matrix) -> None:
    x = make_matrix(3, 6, 40, "outliers")
    tok = ref.quantize(x, QuantSpec(8, granularity="token"))
    chan = ref.quantize(x, QuantSpec(8, granularity="channel"))
    for a, b in zip(tok[:2], chan[:2], strict=True):
        np.testing.assert_array_equal(a, b)
    codes, scale, zero = ref.quantize_per_token(x, 8)
    assert zero is None
    np.testing.assert_array_equal(codes, tok[0])
    np.testing.assert_array_equal(scale, tok[1].reshape(-1))


@given(
    st.integers(0, 2**31),
    st.integers(1, 8),
    st.integers(1, 64),
    st.sampled_from([2, 3, 4, 8]),
    st.booleans(),
    st.sampled_from([0.5, 0.8, 1.0]),
)
def test_quantize_per_token(make_matrix, seed, rows, cols, bits, symmetric, clip) -> None:
    """Signed int8 codes in range; dequant within half a step inside the (clipped) range."""
    x = make_matrix(seed, rows, cols, "outliers")
    codes, scale, zero = ref.quantize_per_token(x, bits, symmetric, clip)
    half = 1 << (bits - 1)
    assert codes.dtype == np.int8 and -half <= codes.min() and codes.max() <= half - 1
    assert scale.shape == (rows,) and scale.dtype == np.float32
    zs = np.zeros(rows, dtype=np.int32) if zero is None else zero
    assert zero is None or (zero.dtype == np.int32 and zero.shape == (rows,))
    deq = (codes.astype(np.float64) - zs[:, None]) * scale[:, None]
    lo = np.minimum(x.min(1), 0) * clip
    hi = np.maximum(x.max(1), 0) * clip
    inside = (x >= lo[:, None]) & (x <= hi[:, None])
    err = np.abs(deq - x)
    assert np.all(err[inside] <= (0.5 * scale[:, None] * (1 + 1e-5) + 1e-6 * np.abs(x))[inside])
    if clip == 1.0:
        assert inside.all()


def test_quantize_per_token_asymmetric_matches_spec_quantize(make_matrix) -> None:
    """Signed codes/zero of quantize_per_token are quantize()'s unsigned ones minus 2^(b-1)."""
    x = make_matrix(11, 5, 24, "positive")
    codes, scale, zero = ref.quantize_per_token(x, 4, symmetric=False)
    ucodes, uscale, uzero = ref.quantize(x, QuantSpec(4, False, "token"))
    np.testing.assert_array_equal(codes, ucodes.astype(np.int16) - 8)
    np.testing.assert_array_equal(zero, uzero.reshape(-1) - 8)
    np.testing.assert_array_equal(scale, uscale.reshape(-1))


@pytest.mark.parametrize("gran", ["tensor", "channel", "token"])
def test_fp8_matches_compressed_tensors(make_matrix, gran: str) -> None:
    spec = QuantSpec(8, granularity=gran, type="float")
    x = make_matrix(5, 7, 48, "outliers", 3.0)
    codes, scale, zero = dllm_kernels.quantize(torch.from_numpy(x), spec)
    assert codes.dtype == torch.float8_e4m3fn and zero is None
    ct_fq, ct_scale, _ = ct_reference(x, spec)
    np.testing.assert_array_equal(scale.numpy(), ct_scale.numpy().reshape(scale.shape))
    assert torch.equal(dllm_kernels.dequantize(codes, scale, zero, spec), ct_fq)
    assert float(scale.max()) == pytest.approx(float(np.abs(x).max()) / 448.0, rel=1e-6)


def test_fp8_is_refused_by_the_numpy_reference(make_matrix) -> None:
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        ref.quantize(make_matrix(0, 2, 8), QuantSpec(8, type="float"))


@pytest.mark.parametrize(
    ("x", "spec", "message"),
    [
        (np.zeros((4, 10), np.float32), QuantSpec(4, granularity="group", group_size=4), "not divisible"),
        (np.zeros((4,), np.float32), QuantSpec(4), "must be 2-D"),
        (np.zeros((4, 8), np.int32), QuantSpec(4), "float16/float32/float64"),
        (np.zeros((0, 8), np.float32), QuantSpec(4), "non-empty"),
        ([[1.0, 2.0]], QuantSpec(4), "numpy array"),
    ],
)
def test_quantize_bad_input(x, spec: QuantSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ref.quantize(x, spec)


def test_dequantize_bad_input(make_matrix) -> None:
    spec = QuantSpec(4, symmetric=False, granularity="group", group_size=8)
    codes, scale, zero = ref.quantize(make_matrix(0, 3, 16), spec)
    with pytest.raises(ValueError, match="needs the int32 zero point"):
        ref.dequantize(codes, scale, None, spec)
    with pytest.raises(ValueError, match="dtype uint8"):
        ref.dequantize(codes.astype(np.int8), scale, zero, spec)
    with pytest.raises(ValueError, match=r"scale must have shape \[3, 2\]"):
        ref.dequantize(codes, scale[:, :1], zero, spec)
    with pytest.raises(ValueError, match="zero must be None"):
        ref.dequantize(codes.view(np.int8), scale, zero, QuantSpec(4, granularity="group", group_size=8))
