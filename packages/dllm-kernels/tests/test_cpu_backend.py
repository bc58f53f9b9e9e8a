"""The fast CPU backend (:mod:`dllm_kernels.cpu`) against the Numba references, on ragged shapes.

* integer GEMMs (``int8_gemm``, ``w4a8_gemm``, ``w4a4_gemm``, grouped ``int_matmul``) and per-token
  quantization: bit-identical to the references;
* ``wna16_gemm`` with float32 activations: the reference's float32 weights, only the accumulation order
  differs (relative Frobenius error <= 1e-6); with bfloat16 activations: bf16 inputs, bf16-rounded weights
  and a bf16 result, so within a few bf16 ulps (relative Frobenius error <= 1e-2 against the float64 product
  of the bf16-rounded operands, <= 2e-2 against the float32 reference);
* the bf16 weight tiles are the float32 weights rounded to nearest, ties to even (torch's rounding);
* weights stacked along N (``stacked_matmul``, ``stacked_int_matmul``) give each weight's own result.
"""

from __future__ import annotations

import os
import subprocess
import sys

import dllm_kernels
import numpy as np
import pytest
import torch
from dllm_kernels import reference as ref
from dllm_kernels.cpu import native_bf16, ops, tiles
from dllm_kernels.cpu.ops import PackedWeight
from hypothesis import given, settings
from hypothesis import strategies as st

shapes = st.tuples(st.integers(1, 19), st.integers(1, 37), st.integers(1, 5))
"""(M, N, K groups)."""


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double(), b.double()
    den = torch.linalg.norm(b64)
    return float(torch.linalg.norm(a64 - b64) / den) if den > 0 else float(torch.linalg.norm(a64))


@given(
    shapes,
    st.sampled_from([2, 3, 4, 8]),
    st.booleans(),
    st.sampled_from([8, 16, 32, None]),
    st.integers(0, 2**16),
    st.integers(1, 9),
)
def test_dequantize_tiles_equal_the_reference_weights(
    quantized_weight, shape, bits, symmetric, group, seed, k_extra
) -> None:
    _, n, k_groups = shape
    k = (group or k_extra) * k_groups  # per-channel K is ragged: not a multiple of the values per word
    codes, scale, zero, packed, spec = quantized_weight(n, k, bits, symmetric, group, seed)
    want = dllm_kernels.dequantize(codes, scale, zero, spec, backend="numba")
    pw = PackedWeight.from_tensors(packed, scale, zero, bits, group, k)
    f32 = np.empty((n, k), dtype=np.float32)
    pw.dequantize_into(f32)
    assert torch.equal(torch.from_numpy(f32), want)
    b16 = np.empty((n, k), dtype=np.uint16)
    pw.dequantize_into(b16)
    assert torch.equal(torch.from_numpy(b16).view(torch.bfloat16), want.to(torch.bfloat16))
    int8 = np.empty((n, k), dtype=np.int8)
    if symmetric:
        pw.unpack_into(int8)
        assert torch.equal(torch.from_numpy(int8), codes)


@given(
    shapes,
    st.sampled_from([2, 3, 4, 8]),
    st.booleans(),
    st.sampled_from([8, 32, None]),
    st.integers(0, 2**16),
)
def test_wna16_gemm_matches_the_reference(quantized_weight, shape, bits, symmetric, group, seed) -> None:
    m, n, k_groups = shape
    k = (group or 12) * k_groups
    codes, scale, zero, packed, spec = quantized_weight(n, k, bits, symmetric, group, seed)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed + 1))
    want = dllm_kernels.wna16_gemm(x, packed, scale, zero, bits, group, backend="numba")
    got = dllm_kernels.wna16_gemm(x, packed, scale, zero, bits, group, backend="cpu")
    assert got.dtype == torch.float32 and _rel(got, want) <= 1e-6
    got16 = dllm_kernels.wna16_gemm(x.bfloat16(), packed, scale, zero, bits, group, backend="cpu")
    assert got16.dtype == torch.bfloat16
    w16 = dllm_kernels.dequantize(codes, scale, zero, spec, backend="numba").bfloat16()
    exact16 = x.bfloat16().double() @ w16.double().T
    assert _rel(got16.float(), exact16) <= 1e-2
    assert _rel(got16.float(), want) <= 2e-2


@given(shapes, st.sampled_from([4, 8]), st.sampled_from([8, 16, 32, None]), st.integers(0, 2**16))
def test_int_matmul_is_bit_identical_to_the_grouped_reference(
    quantized_weight, shape, bits, group, seed
) -> None:
    m, n, k_groups = shape
    k = (group or 24) * k_groups
    codes, scale, _, packed, _ = quantized_weight(n, k, bits, True, group, seed)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed + 1)) * 3
    xq, xs, _ = dllm_kernels.quantize_per_token(x, 8, backend="numba")
    pw = PackedWeight.from_tensors(packed, scale, None, bits, group, k)
    want = ref.grouped_int_gemm(xq.numpy(), xs.numpy(), codes.numpy(), scale.reshape(n, -1).numpy())
    assert torch.equal(pw.int_matmul(xq, xs), torch.from_numpy(want))
    colsum = codes.double().reshape(n, k // (group or k), -1).sum(2)
    want_term = (colsum * scale.reshape(n, -1).double()).sum(1)
    assert torch.allclose(pw.column_term.double(), want_term, rtol=1e-6, atol=1e-6)


@given(st.tuples(st.integers(1, 19), st.integers(1, 70)), st.integers(0, 2**16))
def test_integer_gemms_are_bit_identical_to_the_references(shape, seed) -> None:
    m, k = shape
    n = 1 + seed % 23
    g = torch.Generator().manual_seed(seed)
    xq = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=g)
    x4 = torch.randint(-8, 8, (m, k), dtype=torch.int8, generator=g)
    wq = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    w4 = dllm_kernels.pack(torch.randint(-8, 8, (n, k), dtype=torch.int8, generator=g), 4)
    xs, ws = torch.rand(m, generator=g), torch.rand(n, generator=g)
    for op, x, w in (
        (dllm_kernels.int8_gemm, xq, wq),
        (dllm_kernels.w4a8_gemm, xq, w4),
        (dllm_kernels.w4a4_gemm, x4, w4),
    ):
        assert torch.equal(op(x, xs, w, ws, backend="cpu"), op(x, xs, w, ws, backend="numba")), op.__name__


PER_TOKEN_CASES = (
    st.tuples(st.integers(1, 19), st.integers(1, 70)),
    st.sampled_from([4, 8]),
    st.booleans(),
    st.sampled_from([1.0, 0.9]),
    st.integers(0, 2**16),
)
"""(shape, bits, symmetric, clip ratio, seed) of a per-token quantization test."""


def _per_token_input(shape: tuple[int, int], seed: int) -> torch.Tensor:
    """Rows of different magnitudes, the first all zero (its scale is eps)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * torch.rand(shape[0], 1, generator=g) * 10
    x[0] = 0.0
    return x


@given(*PER_TOKEN_CASES)
def test_quantize_per_token_is_bit_identical(shape, bits, symmetric, clip, seed) -> None:
    x = _per_token_input(shape, seed)
    got = dllm_kernels.quantize_per_token(x, bits, symmetric, clip, backend="cpu")
    want = dllm_kernels.quantize_per_token(x, bits, symmetric, clip, backend="numba")
    for a, b in zip(got, want, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


@given(*PER_TOKEN_CASES)
def test_fused_fake_quantization_gives_the_values_of_the_reference_codes(
    shape, bits, symmetric, clip, seed
) -> None:
    """The cpu backend's one-pass quantize-dequantize equals the Numba reference's codes, dequantized."""
    x = _per_token_input(shape, seed)
    got = dllm_kernels.fake_quantize_per_token(x, bits, symmetric, clip, backend="cpu")
    codes, scale, zero = dllm_kernels.quantize_per_token(x, bits, symmetric, clip, backend="numba")
    q = codes.to(torch.int32) - (0 if zero is None else zero[:, None])
    assert got.dtype == torch.float32
    assert torch.equal(got, q.to(torch.float32) * scale[:, None])
    assert torch.equal(got, dllm_kernels.fake_quantize_per_token(x, bits, symmetric, clip, backend="numba"))


@settings(max_examples=25, deadline=None)
@given(st.lists(PER_TOKEN_CASES[0], min_size=1, max_size=3), *PER_TOKEN_CASES[1:])
def test_one_launch_for_several_tensors_gives_each_tensors_values(
    shapes, bits, symmetric, clip, seed
) -> None:
    """``fake_quantize_per_token_each`` (one cpu launch over tensors of different shapes) returns each
    tensor's own reference values."""
    xs = [_per_token_input(shape, seed + i) for i, shape in enumerate(shapes)]
    got = dllm_kernels.fake_quantize_per_token_each(xs, bits, symmetric, clip, backend="cpu")
    assert len(got) == len(xs)
    for x, out in zip(xs, got, strict=True):
        assert torch.equal(
            out, dllm_kernels.fake_quantize_per_token(x, bits, symmetric, clip, backend="numba")
        )
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            got, dllm_kernels.fake_quantize_per_token_each(xs, bits, symmetric, clip), strict=True
        )
    )


@pytest.mark.parametrize(
    ("xs", "message"),
    [
        ([], "non-empty sequence"),
        (torch.ones(2, 3), "non-empty sequence"),
        ([torch.ones(2, 3), torch.ones(2, 3, dtype=torch.int32)], r"xs\[1\] must have dtype"),
        ([torch.ones(2, 3), torch.ones(2, 0)], r"xs\[1\] must have at least one column"),
        ([torch.ones(2, 3), torch.ones(3)], r"xs\[1\]"),
    ],
)
def test_several_tensors_are_checked_one_by_one(xs, message) -> None:
    with pytest.raises(ValueError, match=message):
        dllm_kernels.fake_quantize_per_token_each(xs, 8)


def test_large_layers_are_cut_into_tiles(quantized_weight, monkeypatch: pytest.MonkeyPatch) -> None:
    """A weight bigger than one tile gives the result of one tile (the tile loop is exercised): the same bits
    for the integer GEMM, the same up to the float GEMM's accumulation order (which depends on N)."""
    _, scale, zero, packed, _ = quantized_weight(50, 64, 4, True, 32, 0)
    x = torch.randn(7, 64)
    whole = ops.wna16_gemm(x, packed, scale, zero, 4, 32)
    whole16 = ops.wna16_gemm(x.bfloat16(), packed, scale, zero, 4, 32)
    xq, xs, _ = dllm_kernels.quantize_per_token(x, 8)
    whole_int = PackedWeight.from_tensors(packed, scale, None, 4, 32, 64).int_matmul(xq, xs)
    monkeypatch.setattr(ops, "TILE_BYTES", 64 * 4 * 7)  # 7 rows per float32 tile
    assert _rel(ops.wna16_gemm(x, packed, scale, zero, 4, 32), whole) <= 1e-6
    tiled16 = ops.wna16_gemm(x.bfloat16(), packed, scale, zero, 4, 32)  # 14 rows per bf16 tile
    assert tiled16.shape == whole16.shape and _rel(tiled16.float(), whole16.float()) <= 1e-2
    assert torch.equal(
        PackedWeight.from_tensors(packed, scale, None, 4, 32, 64).int_matmul(xq, xs), whole_int
    )


@given(st.tuples(st.integers(1, 200), st.integers(1, 90)), st.integers(1, 20), st.integers(0, 2**16))
def test_the_transposition_of_float32_gemm_results_is_exact(shape, chunks, seed) -> None:
    """`tiles.transpose` (the float32 path's ``tile @ x^T`` result turned into ``[M, N]``) equals torch's
    transposition for ragged shapes, block edges (64 rows) and any split."""
    src = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    dst = np.full(shape[::-1], np.nan, dtype=np.float32)
    tiles.transpose(src.numpy(), min(chunks, shape[0]), dst)
    assert torch.equal(torch.from_numpy(dst), src.t())


def test_int_matmul_refuses_zero_points(quantized_weight) -> None:
    _, scale, zero, packed, _ = quantized_weight(4, 32, 4, False, 16, 0)
    with pytest.raises(ValueError, match="symmetric"):
        PackedWeight.from_tensors(packed, scale, zero, 4, 16, 32).int_matmul(
            torch.zeros(2, 32, dtype=torch.int8), torch.ones(2)
        )


def test_cpu_backend_refuses_cuda_tensors_and_auto_honours_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dllm_kernels.dispatch.BACKEND_ENV, "numba")
    assert not dllm_kernels.dispatch.fast_cpu_gemms()
    assert dllm_kernels.resolve_backend("auto", [torch.zeros(1)]) == "numba"
    monkeypatch.delenv(dllm_kernels.dispatch.BACKEND_ENV)
    assert dllm_kernels.dispatch.fast_cpu_gemms()
    assert isinstance(native_bf16(), bool)


@pytest.mark.parametrize("cap", ["AVX2", "avx512_core_vnni", "SSE41"])
def test_an_isa_cap_below_bf16_means_no_native_bf16(monkeypatch: pytest.MonkeyPatch, cap: str) -> None:
    """``ONEDNN_MAX_CPU_ISA`` below AVX512-BF16: oneDNN emulates bf16, so the float32 tiles are chosen."""
    uncapped = native_bf16.__wrapped__()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert native_bf16.__wrapped__() is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_amx")
    assert native_bf16.__wrapped__() is uncapped


@given(
    st.lists(st.integers(1, 23), min_size=1, max_size=3),
    st.integers(1, 9),
    st.sampled_from([4, 8]),
    st.sampled_from([16, None]),
    st.integers(0, 2**16),
)
def test_stacked_gemms_give_each_weights_own_numbers(quantized_weight, outs, m, bits, group, seed) -> None:
    """Weights stacked along N (q/k/v, gate/up sharing an input): the integer GEMM gives each weight's own
    bits, the float GEMM each weight's own numbers up to the accumulation order."""
    k = (group or 40) * 2
    weights = []
    for i, n in enumerate(outs):
        _, scale, _, packed, _ = quantized_weight(n, k, bits, True, group, seed + i)
        weights.append(PackedWeight.from_tensors(packed, scale, None, bits, group, k))
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed)) * 3
    assert _rel(ops.stacked_matmul(weights, x), torch.cat([w.matmul(x) for w in weights], 1)) <= 1e-6
    got16 = ops.stacked_matmul(weights, x.bfloat16())
    assert got16.dtype == torch.bfloat16
    assert _rel(got16.float(), torch.cat([w.matmul(x.bfloat16()) for w in weights], 1).float()) <= 1e-2
    xq, xs, _ = dllm_kernels.quantize_per_token(x, 8)
    want = torch.cat([w.int_matmul(xq, xs) for w in weights], 1)
    assert torch.equal(ops.stacked_int_matmul(weights, xq, xs), want)


@given(
    st.lists(
        st.tuples(st.integers(1, 13), st.sampled_from([2, 3, 4, 8]), st.booleans(), st.sampled_from([8, 24])),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, 12),
    st.integers(1, 20),
    st.integers(0, 2**16),
)
def test_a_stack_dequantizes_every_members_rows(quantized_weight, members, n0, rows, seed) -> None:
    """`tiles.dequantize_stack` on any row range of weights of mixed widths, zero points and group sizes
    stacked along N: each row of a float32 tile is its own weight's reference value, each row of a bf16
    tile that value rounded to bf16 (torch's rounding); 4-bit rows start at even and odd offsets."""
    k = 48  # a multiple of both group sizes
    weights, rows_want = [], []
    for i, (n, bits, symmetric, group) in enumerate(members):
        codes, scale, zero, packed, spec = quantized_weight(n, k, bits, symmetric, group, seed + i)
        weights.append(PackedWeight.from_tensors(packed, scale, zero, bits, group, k))
        rows_want.append(dllm_kernels.dequantize(codes, scale, zero, spec, backend="numba"))
    want = torch.cat(rows_want)
    n0 = min(n0, len(want) - 1)
    rows = min(rows, len(want) - n0)
    stack = ops.WeightStack.of(weights)
    tile = np.empty((rows, k), dtype=np.uint16)
    stack.dequantize_into(tile, n0)
    assert torch.equal(torch.from_numpy(tile).view(torch.bfloat16), want[n0 : n0 + rows].bfloat16())
    tile32 = np.empty((rows, k), dtype=np.float32)
    stack.dequantize_into(tile32, n0)
    assert torch.equal(torch.from_numpy(tile32), want[n0 : n0 + rows])


@given(
    st.lists(st.tuples(st.integers(1, 13), st.sampled_from([4, 8])), min_size=1, max_size=3),
    st.integers(1, 9),
    st.sampled_from([4, 8]),
    st.booleans(),
    st.sampled_from([1.0, 0.9]),
    st.sampled_from([16, None]),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_quantizing_in_the_unpacking_launch_gives_the_bits_of_quantizing_first(
    quantized_weight, members, m, x_bits, symmetric, clip, group, small_tiles, seed
) -> None:
    """`WeightStack.quantized_int_matmul` (per-token quantization inside the launch that unpacks the first
    tile of codes; stacked 4- and 8-bit weights; one or several tiles) gives the bits of
    `quantize_per_token` followed by each member's own `int_matmul`."""
    k = (group or 24) * 2
    weights = []
    for i, (n, bits) in enumerate(members):
        _, scale, _, packed, _ = quantized_weight(n, k, bits, True, group, seed + i)
        weights.append(PackedWeight.from_tensors(packed, scale, None, bits, group, k))
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed)) * 3
    stack = ops.WeightStack.of(weights)
    tile_bytes = k * 5 if small_tiles else ops.TILE_BYTES  # 5 rows per tile
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ops, "TILE_BYTES", tile_bytes)
        y, scale, zero = stack.quantized_int_matmul(x, x_bits, symmetric, clip)
    xq, xs, xz = dllm_kernels.quantize_per_token(x, x_bits, symmetric, clip, backend="numba")
    assert torch.equal(scale, xs) and (zero is None if symmetric else torch.equal(zero, xz))
    assert torch.equal(y, torch.cat([w.int_matmul(xq, xs) for w in weights], 1))


def test_stacked_gemms_refuse_weights_of_another_shape(quantized_weight) -> None:
    _, scale, _, packed, _ = quantized_weight(4, 32, 4, True, 16, 0)
    _, scale2, _, packed2, _ = quantized_weight(4, 64, 4, True, 16, 1)
    a = PackedWeight.from_tensors(packed, scale, None, 4, 16, 32)
    b = PackedWeight.from_tensors(packed2, scale2, None, 4, 16, 64)
    with pytest.raises(ValueError, match="in_features"):
        ops.stacked_matmul([a, b], torch.zeros(2, 32))
    with pytest.raises(ValueError, match="in_features"):
        ops.stacked_int_matmul([a, b], torch.zeros(2, 32, dtype=torch.int8), torch.ones(2))


def test_numba_kernels_keep_torchs_thread_count_in_a_fresh_process() -> None:
    """Starting Numba's OpenMP layer inside a kernel used to reset torch to every core; importing
    ``dllm_kernels.cpu`` starts it up front. Run in a fresh process without ``OMP_NUM_THREADS``."""
    code = (
        "import torch; torch.set_num_threads(1); from dllm_kernels.cpu.clip_search import clip_search; "
        "clip_search(torch.randn(64, 128), 4, True, [1.0, 0.9], 2.0); print(torch.get_num_threads())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "1"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_weights_of_one_shape_share_the_scratch_tile_without_stale_results(quantized_weight, dtype) -> None:
    """Layers of one shape reuse one scratch tile and its torch view; each call must see its own weight
    (a GEMM that cached anything keyed by the view would return the previous layer's product)."""
    weights = []
    for seed in (1, 2):
        codes, scale, zero, packed, spec = quantized_weight(24, 32, 4, False, 16, seed)
        want_w = dllm_kernels.dequantize(codes, scale, zero, spec, backend="numba").to(dtype)
        weights.append((PackedWeight.from_tensors(packed, scale, zero, 4, 16, 32), want_w))
    x = torch.randn(5, 32).to(dtype)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
    for _ in range(2):
        for weight, want_w in weights:
            assert _rel(weight.matmul(x, dtype).double(), x.double() @ want_w.double().T) <= tol
