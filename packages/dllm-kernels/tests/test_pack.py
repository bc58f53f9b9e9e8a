"""pack / unpack in the compressed-tensors pack-quantized layout, checked against compressed-tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32
from compressed_tensors.quantization import QuantizationScheme
from dllm_kernels import QuantSpec
from dllm_kernels import reference as ref
from hypothesis import given
from hypothesis import strategies as st


@st.composite
def code_arrays(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """Random codes (int8 symmetric or uint8 asymmetric) with ragged column counts, and their bit width."""
    bits = draw(st.sampled_from([2, 3, 4, 8]))
    rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 100))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    if draw(st.booleans()):
        half = 1 << (bits - 1)
        return rng.integers(-half, half, size=(rows, cols)).astype(np.int8), bits
    return rng.integers(0, 1 << bits, size=(rows, cols)).astype(np.uint8), bits


def signed(codes: np.ndarray, bits: int) -> np.ndarray:
    """compressed-tensors' int8 view of our codes (asymmetric uint8 codes shifted by -2^(b-1))."""
    if codes.dtype == np.int8:
        return codes
    return (codes.astype(np.int16) - (1 << (bits - 1))).astype(np.int8)


@given(code_arrays())
def test_round_trip_is_bit_exact(case) -> None:
    codes, bits = case
    rows, cols = codes.shape
    packed = ref.pack(codes, bits)
    assert packed.dtype == np.int32 and packed.shape == (rows, -(-cols * bits // 32))
    out = ref.unpack(packed, bits, cols, symmetric=codes.dtype == np.int8)
    assert out.dtype == codes.dtype
    np.testing.assert_array_equal(out, codes)
    used = cols * bits - 32 * (packed.shape[1] - 1)  # bits used in the last word
    if used < 32:
        assert np.all((packed[:, -1].view(np.uint32) >> used) == 0), "padding bits must be zero"


@given(code_arrays())
def test_same_words_as_compressed_tensors(case) -> None:
    codes, bits = case
    theirs = pack_to_int32(torch.from_numpy(signed(codes, bits)), bits)
    np.testing.assert_array_equal(ref.pack(codes, bits), theirs.numpy())
    back = unpack_from_int32(torch.from_numpy(ref.pack(codes, bits)), bits, torch.Size(codes.shape))
    np.testing.assert_array_equal(back.numpy(), signed(codes, bits))


@given(code_arrays())
def test_pack_rows_matches_compressed_tensors_dim0(case) -> None:
    codes, bits = case
    packed = ref.pack_rows(codes, bits)
    assert packed.shape == (-(-codes.shape[0] * bits // 32), codes.shape[1])
    theirs = pack_to_int32(torch.from_numpy(signed(codes, bits)), bits, packed_dim=0)
    np.testing.assert_array_equal(packed, theirs.numpy())
    back = ref.unpack_rows(packed, bits, codes.shape[0], symmetric=codes.dtype == np.int8)
    np.testing.assert_array_equal(back, codes)


def test_known_layout() -> None:
    """Hand-checked words: 4-bit symmetric [-8, -7, ..., 7] and 3-bit values straddling a word boundary."""
    nibbles = np.arange(-8, 8, dtype=np.int8).reshape(1, 16)
    np.testing.assert_array_equal(ref.pack(nibbles, 4).view(np.uint32), [[0x76543210, 0xFEDCBA98]])
    three = np.zeros((1, 11), dtype=np.uint8)
    three[0, 10] = 0b111  # bits 30..32: two low bits in word 0, one high bit in word 1
    np.testing.assert_array_equal(ref.pack(three, 3).view(np.uint32), [[0xC0000000, 0x1]])


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize(
    ("symmetric", "gran"), [(True, "group"), (False, "group"), (True, "channel"), (False, "channel")]
)
def test_compressed_tensors_decompressor_reproduces_our_dequant(make_matrix, bits, symmetric, gran) -> None:
    """Our packed weight + scale (+ packed zero point) decompress in compressed-tensors to our fake quant."""
    spec = QuantSpec(bits, symmetric, gran, 16 if gran == "group" else None)
    w = make_matrix(bits, 37, 48, "outliers")
    codes, scale, zero = ref.quantize(w, spec)
    state = {
        "weight_packed": torch.from_numpy(ref.pack(codes, bits)),
        "weight_scale": torch.from_numpy(scale),
        "weight_shape": torch.tensor(w.shape),
    }
    if not symmetric:
        state["weight_zero_point"] = torch.from_numpy(ref.pack_rows(zero.astype(np.uint8), bits))
    scheme = QuantizationScheme(targets=["Linear"], weights=spec.to_compressed_tensors())
    out = PackedQuantizationCompressor.decompress(state, scheme)
    np.testing.assert_array_equal(out["weight"].numpy(), ref.dequantize(codes, scale, zero, spec))
    if not symmetric:
        np.testing.assert_array_equal(out["weight_zero_point"].numpy(), zero - (1 << (bits - 1)))


def test_compressed_tensors_compressor_writes_our_words(make_matrix) -> None:
    """compress() from a float weight and our qparams yields exactly our packed words and zero points."""
    spec = QuantSpec(3, False, "group", 8)
    w = make_matrix(7, 9, 40)
    codes, scale, zero = ref.quantize(w, spec)
    scheme = QuantizationScheme(targets=["Linear"], weights=spec.to_compressed_tensors())
    state = {
        "weight": torch.from_numpy(w),
        "weight_scale": torch.from_numpy(scale),
        "weight_zero_point": torch.from_numpy((zero - 4).astype(np.int8)),
    }
    out = PackedQuantizationCompressor.compress(state, scheme)
    np.testing.assert_array_equal(out["weight_packed"].numpy(), ref.pack(codes, 3))
    np.testing.assert_array_equal(out["weight_zero_point"].numpy(), ref.pack_rows(zero.astype(np.uint8), 3))


@pytest.mark.parametrize(
    ("codes", "bits", "message"),
    [
        (np.array([[8]], dtype=np.int8), 4, r"must lie in \[-8, 7\]"),
        (np.array([[16]], dtype=np.uint8), 4, r"must lie in \[0, 15\]"),
        (np.array([[1]], dtype=np.int32), 4, "dtype int8/uint8"),
        (np.array([1], dtype=np.int8), 4, "must be 2-D"),
        (np.array([[1]], dtype=np.int8), 5, "bits must be one of"),
    ],
)
def test_pack_bad_input(codes: np.ndarray, bits: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ref.pack(codes, bits)


def test_unpack_bad_input() -> None:
    packed = ref.pack(np.zeros((2, 10), dtype=np.int8), 3)
    with pytest.raises(ValueError, match=r"packed must have shape \[\*, 2\]"):
        ref.unpack(packed, 3, 11)
    with pytest.raises(ValueError, match="dtype int32"):
        ref.unpack(packed.view(np.uint32), 3, 10)
    with pytest.raises(ValueError, match="n_cols must be"):
        ref.unpack(packed, 3, -1)
