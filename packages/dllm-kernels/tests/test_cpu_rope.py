"""The fused RoPE + per-token quantization of q and k (`dllm_kernels.cpu.rope`) against the steps it fuses:
rotate-half RoPE in torch float32 and the Numba reference's per-token quantization, bit for bit."""

from __future__ import annotations

import dllm_kernels
import torch
from dllm_kernels.cpu.rope import rope_fake_quantize_heads
from hypothesis import given, settings
from hypothesis import strategies as st


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` in float32, as a model's RoPE computes it."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _reference(x: torch.Tensor, cos, sin, bits, symmetric, clip, per_head) -> torch.Tensor:
    b, h, n, d = x.shape
    rows = _rope(x, cos, sin).transpose(1, 2).reshape(-1, d if per_head else h * d)
    out = dllm_kernels.fake_quantize_per_token(rows, bits, symmetric, clip, backend="numba")
    return out.reshape(b, n, h, d).transpose(1, 2)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 2),
    length=st.integers(1, 9),
    heads=st.tuples(st.integers(1, 4), st.integers(1, 3)),
    head_dim=st.sampled_from([2, 6, 8, 16]),
    bits=st.sampled_from([4, 8]),
    symmetric=st.booleans(),
    clip=st.sampled_from([1.0, 0.85]),
    per_head=st.booleans(),
    fused_output=st.booleans(),
    shared_tables=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fused_rope_and_quantization_equal_the_separate_steps(
    batch, length, heads, head_dim, bits, symmetric, clip, per_head, fused_output, shared_tables, seed
) -> None:
    """Ragged shapes; q and k as column blocks of one projection output (strided) or as their own
    tensors; RoPE tables for each sequence or one shared by the batch."""
    g = torch.Generator().manual_seed(seed)
    h_q, h_k = heads
    widths = (h_q * head_dim, h_k * head_dim)
    if fused_output:
        y = torch.randn(batch, length, sum(widths) + 3, generator=g) * 4
        blocks = (y[..., : widths[0]], y[..., widths[0] : sum(widths)])
    else:
        blocks = tuple(torch.randn(batch, length, w, generator=g) * 4 for w in widths)
    q, k = (x.view(batch, length, -1, head_dim).transpose(1, 2) for x in blocks)
    positions = torch.rand(1 if shared_tables else batch, 1, length, head_dim // 2, generator=g) * 50
    angles = torch.cat((positions, positions), dim=-1)
    cos, sin = angles.cos(), angles.sin()
    got = rope_fake_quantize_heads((q, k), cos, sin, bits, symmetric, clip, per_head)
    for out, x in zip(got, (q, k), strict=True):
        want = _reference(x, cos, sin, bits, symmetric, clip, per_head)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert torch.equal(out, want)


def test_one_tensor_alone_and_inputs_left_untouched() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 5, 8, generator=g)
    before = x.clone()
    cos, sin = torch.rand(1, 1, 5, 8, generator=g), torch.rand(1, 1, 5, 8, generator=g)
    (out,) = rope_fake_quantize_heads((x,), cos, sin, 8, True, 1.0, True)
    assert torch.equal(x, before)
    assert torch.equal(out, _reference(x, cos, sin, 8, True, 1.0, True))
