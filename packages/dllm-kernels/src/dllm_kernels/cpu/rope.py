"""RoPE and the per-token quantization of the attention's queries and keys, fused in one CPU pass.

A model whose Q and K are quantized (W8A8 / W4A4 with the attention sites quantized) rotates q and k by
position (rotate-half RoPE), then quantizes and dequantizes them per token (and head). In torch that is
about ten elementwise launches and a quantization launch per layer, each reading and writing the whole
tensors; `rope_fake_quantize_heads` does it all in one parallel Numba launch, a token's heads at a time
while they are in cache. The numbers are those of the separate steps, bit for bit: the rotation is the
same float32 operations in the same order (``x * cos + rotate_half(x) * sin``, no fused multiply-add),
the quantization is `tiles.fake_quantize_row`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import torch

from dllm_kernels.cpu.tiles import fake_quantize_row, job_rows, row_chunks

__all__ = ["rope_fake_quantize_heads", "rope_fake_quantize_rows"]


@numba.njit(cache=True, parallel=True)
def rope_fake_quantize_rows(
    xs: tuple[np.ndarray, ...],
    cos: np.ndarray,
    sin: np.ndarray,
    head_dim: int,
    per_head: bool,
    bits: int,
    symmetric: bool,
    clip_ratio: np.float32,
    chunks: int,
    outs: tuple[np.ndarray, ...],
) -> None:
    """For each float32 ``xs[i] [T, H_i * Dh]`` (a token's heads side by side) into ``outs[i]`` (same
    shape): each head rotated, ``out[d] = x[d] * cos[t, d] + r[d] * sin[t, d]`` with ``r = (-x[Dh/2:],
    x[:Dh/2])`` (``cos``, ``sin`` float32 ``[T, Dh]``), then quantized and dequantized in place per head
    (``per_head``) or per token over all heads. ``chunks`` token ranges of each tensor run in parallel."""
    half = np.uint64(head_dim // 2)
    dh = np.uint64(head_dim)
    for job in numba.prange(len(xs) * chunks):
        flat_x, flat_o, width, t0, t1 = job_rows(xs, outs, job, chunks)
        heads = np.uint64(width) // dh
        for t in range(t0, t1):
            base = np.uint64(t) * np.uint64(width)
            ct = cos[t]
            st = sin[t]
            for h in range(heads):
                hb = base + np.uint64(h) * dh
                for d in range(half):
                    flat_o[hb + d] = flat_x[hb + d] * ct[d] + (-flat_x[hb + d + half]) * st[d]
                for d in range(half, dh):
                    flat_o[hb + d] = flat_x[hb + d] * ct[d] + flat_x[hb + d - half] * st[d]
            if per_head:
                for h in range(heads):
                    hb = base + np.uint64(h) * dh
                    fake_quantize_row(flat_o, hb, head_dim, bits, symmetric, clip_ratio, flat_o)
            else:
                fake_quantize_row(flat_o, base, width, bits, symmetric, clip_ratio, flat_o)


def rope_fake_quantize_heads(
    xs: Sequence[torch.Tensor],
    cos: torch.Tensor,
    sin: torch.Tensor,
    bits: int,
    symmetric: bool,
    clip_ratio: float,
    per_head: bool,
) -> tuple[torch.Tensor, ...]:
    """Each float32 ``x [B, H_i, L, Dh]`` of ``xs`` rotated by the float32 RoPE tables ``cos``, ``sin``
    (broadcastable to ``[B, 1, L, Dh]``), then quantized and dequantized per token and head (``per_head``)
    or per token over all heads: float32 ``[B, H_i, L, Dh]`` each, laid out ``[B, L, H_i, Dh]`` (the
    layout the projections' outputs have). One launch for all of ``xs``; `rope_fake_quantize_rows`."""
    b, _, length, dh = xs[0].shape
    # numpy's views and copies cost a fraction of torch's per-op overhead at these sizes
    tables = [_np(t.expand(b, 1, length, dh)).reshape(b * length, dh) for t in (cos, sin)]
    rows = tuple(
        np.ascontiguousarray(_np(x).transpose(0, 2, 1, 3).reshape(b * length, x.shape[1] * dh)) for x in xs
    )
    outs = tuple(np.empty_like(r) for r in rows)
    rope_fake_quantize_rows(
        rows, *tables, dh, per_head, bits, symmetric, np.float32(clip_ratio), row_chunks(b * length), outs
    )
    return tuple(torch.from_numpy(out.reshape(b, length, -1, dh).transpose(0, 2, 1, 3)) for out in outs)


def _np(t: torch.Tensor) -> np.ndarray:
    """``t``'s values as a NumPy array (a view where NumPy can express t's strides, else a copy)."""
    return t.detach().numpy() if all(s > 0 for s in t.stride()) else t.detach().contiguous().numpy()
