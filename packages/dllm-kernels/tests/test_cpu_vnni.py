"""The AVX512-VNNI integer GEMM (:mod:`dllm_kernels.cpu.vnni`) against the Numba reference, on ragged shapes.

Bit-identical to :func:`dllm_kernels.reference.gemm.grouped_int_gemm` for stacks of 8- or 4-bit weights,
per channel and group-wise, token counts that are not multiples of the 4-token micro-tile and column counts
that are not multiples of the 64-column panel; and the path taken is checked, so that a test meant for the
VNNI kernel cannot pass on the ``torch._int_mm`` fallback. Skipped (with the reason) on CPUs without
AVX512-VNNI, where the fallback's own tests in test_cpu_backend.py run.
"""

from __future__ import annotations

from collections.abc import Callable

import dllm_kernels
import numpy as np
import pytest
import torch
from dllm_kernels import reference as ref
from dllm_kernels.cpu import ops, vnni
from dllm_kernels.cpu.ops import PackedWeight, WeightStack
from hypothesis import given
from hypothesis import strategies as st

needs_vnni = pytest.mark.skipif(
    not vnni.available(), reason="this CPU (or Numba's target) has no AVX512-VNNI"
)


def _member(
    quantized_weight: Callable[..., tuple], n: int, k: int, bits: int, group: int | None, seed: int
) -> tuple[PackedWeight, np.ndarray]:
    """A symmetric weight (conftest's ``quantized_weight``): its PackedWeight and signed int8 codes [n, k]."""
    codes, scale, _, packed, _ = quantized_weight(n, k, bits, True, group, seed)
    return PackedWeight.from_tensors(packed, scale, None, bits, group, k), codes.numpy()


def _no_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise AssertionError("the torch._int_mm fallback ran instead of the VNNI kernel")

    monkeypatch.setattr(ops, "_grouped_int_mm", refuse)


def _reference(
    stack: WeightStack, codes: list[np.ndarray], xq: torch.Tensor, xs: torch.Tensor
) -> torch.Tensor:
    parts = [
        ref.grouped_int_gemm(xq.numpy(), xs.numpy(), c, w.scale)
        for w, c in zip(stack.weights, codes, strict=True)
    ]
    return torch.from_numpy(np.concatenate(parts, axis=1))


@needs_vnni
@given(
    st.lists(st.integers(1, 150), min_size=1, max_size=3),
    st.integers(1, 23),
    st.sampled_from([4, 8]),
    st.sampled_from([64, 128, None]),
    st.integers(1, 3),
    st.integers(0, 2**16),
)
def test_vnni_int_matmul_is_bit_identical_to_the_reference(
    quantized_weight, outs, m, bits, group, k_groups, seed
) -> None:
    k = (group or 64) * k_groups
    members = [_member(quantized_weight, n, k, bits, group, seed + i) for i, n in enumerate(outs)]
    stack = WeightStack.of([w for w, _ in members])
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed)) * 3
    xq, xs, _ = dllm_kernels.quantize_per_token(x, 8, backend="numba")
    with pytest.MonkeyPatch.context() as patch:
        _no_fallback(patch)
        got = stack.int_matmul(xq, xs)
    assert torch.equal(got, _reference(stack, [c for _, c in members], xq, xs))


@needs_vnni
@pytest.mark.parametrize("bits", [4, 8])
def test_extreme_codes_stay_exact(monkeypatch: pytest.MonkeyPatch, bits: int) -> None:
    """The largest and smallest codes on both sides (the +128 activation offset and its correction at their
    limits): still the reference's bits."""
    n, k, m = 70, 256, 6
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    rng = np.random.default_rng(bits)
    signed = rng.choice([lo, hi], size=(n, k)).astype(np.int8)
    signed[:8] = lo
    signed[8:16] = hi
    packed = dllm_kernels.pack(torch.from_numpy((signed.astype(np.int32) - lo).astype(np.uint8)), bits)
    scale = torch.rand(n, k // 128) + 0.5
    weight = PackedWeight.from_tensors(packed, scale, None, bits, 128, k)
    xq = torch.from_numpy(rng.choice([-128, 127], size=(m, k)).astype(np.int8))
    xq[0] = -128
    xq[1] = 127
    xs = torch.rand(m) + 0.5
    _no_fallback(monkeypatch)
    assert torch.equal(weight.int_matmul(xq, xs), _reference(weight.stack, [signed], xq, xs))


@needs_vnni
@given(st.integers(1, 19), st.sampled_from([4, 8]), st.booleans(), st.integers(0, 2**16))
def test_quantize_then_vnni_gives_the_bits_of_quantizing_first(
    quantized_weight, m, x_bits, symmetric, seed
) -> None:
    """`WeightStack.quantized_int_matmul` on the VNNI path: its own quantization launch, then the GEMM."""
    members = [_member(quantized_weight, n, 256, 4, 128, seed + i) for i, n in enumerate((40, 24))]
    stack = WeightStack.of([w for w, _ in members])
    x = torch.randn(m, 256, generator=torch.Generator().manual_seed(seed)) * 3
    with pytest.MonkeyPatch.context() as patch:
        _no_fallback(patch)
        y, scale, zero = stack.quantized_int_matmul(x, x_bits, symmetric, 1.0)
    xq, xs, xz = dllm_kernels.quantize_per_token(x, x_bits, symmetric, 1.0, backend="numba")
    assert torch.equal(scale, xs) and (zero is None if symmetric else torch.equal(zero, xz))
    assert torch.equal(y, _reference(stack, [c for _, c in members], xq, xs))


def test_the_fallback_gives_the_same_bits(quantized_weight, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without VNNI (``available`` False) the same weights run ``torch._int_mm`` per group: the same bits."""
    weight, codes = _member(quantized_weight, 90, 256, 4, 128, 0)
    xq, xs, _ = dllm_kernels.quantize_per_token(torch.randn(9, 256) * 3, 8)
    monkeypatch.setattr(vnni, "available", lambda: False)
    fallback = WeightStack.of([weight])
    assert not fallback._vnni
    assert torch.equal(fallback.int_matmul(xq, xs), _reference(fallback, [codes], xq, xs))


@pytest.mark.parametrize(
    ("widths", "group", "runs"),
    [((8,), 128, True), ((4, 4), 64, True), ((4,), 4096, True), ((4, 8), 128, False), ((8,), 32, False),
     ((2,), 128, False), ((3,), 192, False)],
)  # fmt: skip
def test_supported_weights(monkeypatch: pytest.MonkeyPatch, widths, group, runs) -> None:
    """One width of 8 or 4 bits and groups of a multiple of 64 columns; the rest falls back."""
    monkeypatch.setattr(vnni, "available", lambda: True)
    assert vnni.supported(widths, group) is runs
