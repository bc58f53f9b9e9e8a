"""Numba kernels of the fast CPU path: packed weight rows -> dense tiles a BLAS / oneDNN GEMM consumes.

The packed layout is compressed-tensors' ``pack-quantized`` (see :mod:`dllm_kernels.reference.pack`):
``[N, ceil(K*bits/32)]`` int32, value ``k`` of a row at bits ``[k*bits, k*bits + bits)`` of the row's
little-endian bit stream, stored unsigned. Each kernel fills rows ``n0 .. n0 + out.shape[0]`` of the weight
into ``out`` (a reused scratch tile), ``chunks`` row ranges in parallel (``numba.prange``):

* `dequantize_stack`: ``float32(u - z) * scale[n, k // group]``, bit-identical to the reference GEMM's
  dequantization (:func:`dllm_kernels.reference.gemm.wna16_gemm`), into a float32 tile, or that value
  rounded to the nearest bfloat16 (ties to even), written as the bf16 bit pattern into a uint16 tile (NumPy
  has no bfloat16; torch views the tile as ``torch.bfloat16``); several weights stacked along N in one
  launch;
* `unpack_stack_int8`: the signed code ``u - 2^(bits-1)`` as int8 for the integer GEMMs, with the per-token
  quantization of their activations in the same launch;
* `quantize_rows`: dynamic per-token activation quantization alone; `fake_quantize_rows` the same followed
  by the dequantization, of several tensors in one launch (the attention's Q and K sites);
  `scale_accumulate`: the integer GEMMs' float32 epilogue; `transpose`: a float32 GEMM result computed
  as ``tile @ x^T`` turned into ``[M, N]``.

``z`` is ``zero[n, k // group]`` when ``has_zero`` else ``2^(bits-1)``. Values are read a byte at a time
(three bytes, eight values at 3 bits; little-endian hosts: x86, Arm), a row's ragged tail one by one.
Inner loops index with unsigned integers so that LLVM vectorizes them (a signed index costs a negative-index
check that blocks vectorization); integer arithmetic on narrow types is cast back to its width after each
step (Numba widens it to 64 bits, which halves the vector lanes; measured 2.5x on the bf16 rounding).
"""

from __future__ import annotations

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic

from dllm_kernels.reference.gemm import _extract  # one value of a packed row (any width)

__all__ = [
    "dequantize_stack",
    "fake_quantize_row",
    "fake_quantize_rows",
    "grid_params",
    "job_rows",
    "member_rows",
    "quantize_rows",
    "row_chunks",
    "scale_accumulate",
    "transpose",
    "unpack_stack_int8",
]


def row_chunks(rows: int) -> int:
    """Parallel row ranges of a tile kernel: enough to balance up to 16 Numba threads, each at least one row
    (a fixed count: asking Numba for its thread count costs more than the split saves)."""
    return max(1, min(rows, 16))


@numba.njit(cache=True, inline="always")
def _unpack_row(packed: np.ndarray, row_bytes: np.ndarray, n: int, bits: int, codes: np.ndarray) -> None:
    """Unsigned values of packed row ``n`` into ``codes [K]`` int32 (``row_bytes`` is ``packed`` as
    uint8 ``[N * 4 * words]``). Whole bytes (3 bytes = 8 values at 3 bits) first, the tail one by one."""
    k_cols = codes.shape[0]
    src = np.uint64(n) * np.uint64(packed.shape[1] * 4)
    if bits == 8:
        done = k_cols
        for i in range(np.uint64(done)):
            codes[i] = row_bytes[src + i]
    elif bits == 4:
        done = k_cols - k_cols % 2
        for i in range(np.uint64(done // 2)):
            v = row_bytes[src + i]
            codes[2 * i] = v & 15
            codes[2 * i + 1] = v >> 4
    elif bits == 2:
        done = k_cols - k_cols % 4
        for i in range(np.uint64(done // 4)):
            v = row_bytes[src + i]
            codes[4 * i] = v & 3
            codes[4 * i + 1] = (v >> 2) & 3
            codes[4 * i + 2] = (v >> 4) & 3
            codes[4 * i + 3] = v >> 6
    else:  # 3 bits: 8 values in 3 bytes
        done = k_cols - k_cols % 8
        for i in range(np.uint64(done // 8)):
            at = src + np.uint64(3) * i
            v = (
                np.uint32(row_bytes[at])
                | (np.uint32(row_bytes[at + 1]) << 8)
                | (np.uint32(row_bytes[at + 2]) << 16)
            )
            for j in range(8):
                codes[8 * i + j] = (v >> np.uint32(3 * j)) & np.uint32(7)
    for k in range(done, k_cols):
        codes[k] = _extract(packed, n, k, bits)


@intrinsic
def _f32_bits(typingctx, x):  # type: ignore[no-untyped-def]
    """The bit pattern of a float32 scalar as uint32 (an LLVM bitcast: stays in a register, vectorizes)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], context.get_value_type(types.uint32))

    return types.uint32(types.float32), codegen


@numba.njit(cache=True, inline="always")
def _bf16_bits(v: np.float32) -> np.uint32:
    """``v`` rounded to the nearest bfloat16, ties to even, as its 16-bit pattern (in a uint32); finite
    ``v`` only (a NaN payload may carry into the sign bit)."""
    b = _f32_bits(v)
    odd = np.uint32(np.uint32(b >> np.uint32(16)) & np.uint32(1))
    return np.uint32(np.uint32(np.uint32(b + np.uint32(0x7FFF)) + odd) >> np.uint32(16))


@numba.njit(cache=True, inline="always")
def _bf16_row(
    packed: np.ndarray,
    row_bytes: np.ndarray,
    scale: np.ndarray,
    zero: np.ndarray,
    has_zero: bool,
    bits: int,
    group: int,
    n: int,
    codes: np.ndarray,
    out16: np.ndarray,
    out32: np.ndarray,
    base: np.uint64,
) -> None:
    """Weight row ``n`` as bf16 bit patterns into ``out16[base : base + K]`` (``row_bytes``: ``packed`` as
    uint8; ``out32``: the even-length prefix of ``out16`` viewed as uint32; ``codes``: an int32 scratch row of
    K values). 8-bit codes are read
    straight from their bytes; 4-bit pairs (even group sizes, even ``base``) are written as one uint32 per
    byte; other widths unpack the row into ``codes`` first."""
    k_cols = codes.shape[0]
    src = np.uint64(n) * np.uint64(packed.shape[1] * 4)
    offset = np.float32(1 << (bits - 1))
    n_groups = k_cols // group
    if bits == 8:
        for g in range(n_groups):
            s = scale[n, g]
            z = np.float32(zero[n, g]) if has_zero else offset
            g0 = np.uint64(g * group)
            for i in range(np.uint64(group)):
                v = (np.float32(np.int32(row_bytes[src + g0 + i])) - z) * s
                out16[base + g0 + i] = np.uint16(_bf16_bits(v))
    elif bits == 4 and group % 2 == 0 and base % 2 == 0:
        half = np.uint64(group // 2)
        b32 = base // np.uint64(2)
        for g in range(n_groups):
            s = scale[n, g]
            z = np.float32(zero[n, g]) if has_zero else offset
            g0 = b32 + np.uint64(g) * half
            for i in range(half):
                b = np.uint32(row_bytes[src + g0 - b32 + i])
                lo = _bf16_bits((np.float32(np.int32(b & np.uint32(15))) - z) * s)
                hi = _bf16_bits((np.float32(np.int32(b >> np.uint32(4))) - z) * s)
                out32[g0 + i] = np.uint32(lo | np.uint32(hi << np.uint32(16)))
    else:
        _unpack_row(packed, row_bytes, n, bits, codes)
        for g in range(n_groups):
            s = scale[n, g]
            z = np.float32(zero[n, g]) if has_zero else offset
            g0 = np.uint64(g * group)
            for i in range(np.uint64(group)):
                out16[base + g0 + i] = np.uint16(_bf16_bits((np.float32(codes[g0 + i]) - z) * s))


@numba.njit(cache=True, inline="always")
def _f32_row(
    packed: np.ndarray,
    row_bytes: np.ndarray,
    scale: np.ndarray,
    zero: np.ndarray,
    has_zero: bool,
    bits: int,
    group: int,
    n: int,
    codes: np.ndarray,
    out: np.ndarray,
    base: np.uint64,
) -> None:
    """Weight row ``n`` as float32 values ``float32(u - z) * scale`` into ``out[base : base + K]`` (the
    reference GEMM's dequantization, bit for bit): 8-bit codes straight from their bytes, 4-bit pairs from
    one byte (even group sizes), other widths unpacked into ``codes`` (an int32 scratch row of K) first."""
    k_cols = codes.shape[0]
    src = np.uint64(n) * np.uint64(packed.shape[1] * 4)
    offset = np.float32(1 << (bits - 1))
    n_groups = k_cols // group
    if bits == 8:
        for g in range(n_groups):
            s = scale[n, g]
            z = np.float32(zero[n, g]) if has_zero else offset
            g0 = np.uint64(g * group)
            for i in range(np.uint64(group)):
                out[base + g0 + i] = (np.float32(np.int32(row_bytes[src + g0 + i])) - z) * s
    elif bits == 4 and group % 2 == 0:
        half = np.uint64(group // 2)
        for g in range(n_groups):
            s = scale[n, g]
            z = np.float32(zero[n, g]) if has_zero else offset
            g0 = np.uint64(g) * half
            at = base + np.uint64(2) * g0
            for i in range(half):
                b = np.uint32(row_bytes[src + g0 + i])
                out[at + np.uint64(2) * i] = (np.float32(np.int32(b & np.uint32(15))) - z) * s
                out[at + np.uint64(2) * i + np.uint64(1)] = (np.float32(np.int32(b >> np.uint32(4))) - z) * s
    else:
        _unpack_row(packed, row_bytes, n, bits, codes)
        for g in range(n_groups):
            s = scale[n, g]
            z = np.float32(zero[n, g]) if has_zero else offset
            g0 = np.uint64(g * group)
            for i in range(np.uint64(group)):
                out[base + g0 + i] = (np.float32(codes[g0 + i]) - z) * s


@numba.njit(cache=True, inline="always")
def member_rows(meta: np.ndarray, n0: int, r: int, r_end: int) -> tuple[int, int]:
    """``(j, end)``: the stack member ``j`` holding stacked row ``n0 + r`` and the end (exclusive, at most
    ``r_end``) of the tile rows ``r ..`` it holds (``meta[:, 0]``: each member's first row, ascending). A
    kernel walks its rows one member at a time, looking the member's arrays up once."""
    j = 0
    while j + 1 < meta.shape[0] and meta[j + 1, 0] <= n0 + r:
        j += 1
    return j, r_end if j + 1 == meta.shape[0] else min(r_end, meta[j + 1, 0] - n0)


@numba.njit(cache=True, parallel=True)
def dequantize_stack(
    packed: tuple[np.ndarray, ...],
    scale: tuple[np.ndarray, ...],
    zero: tuple[np.ndarray, ...],
    meta: np.ndarray,
    n0: int,
    chunks: int,
    out: np.ndarray,
) -> None:
    """Rows ``n0 .. n0 + rows`` of several weights stacked along N (member ``j``: ``packed[j]``,
    ``scale[j]``, ``zero[j]``; ``meta[j] = (first stacked row, bits, group, has_zero)``, rows ascending),
    dequantized into ``out [rows, K]``: exact float32 values for a float32 ``out`` (`_f32_row`), values
    rounded to bfloat16 (ties to even) as uint16 bit patterns for a uint16 ``out`` (`_bf16_row`). One
    launch feeds a whole GEMM."""
    rows, k_cols = out.shape
    flat = out.reshape(out.size)
    flat32 = flat[: out.size - out.size % 2].view(np.uint32)
    bf16 = out.itemsize == 2
    for c in numba.prange(chunks):
        codes = np.empty(k_cols, dtype=np.int32)
        r, r_end = c * rows // chunks, (c + 1) * rows // chunks
        while r < r_end:
            j, end = member_rows(meta, n0, r, r_end)
            w = packed[j]
            row_bytes = w.reshape(w.size).view(np.uint8)
            s, z, has_zero, bits, group = scale[j], zero[j], meta[j, 3] != 0, meta[j, 1], meta[j, 2]
            for rr in range(r, end):
                n = n0 + rr - meta[j, 0]
                base = np.uint64(rr) * np.uint64(k_cols)
                if bf16:
                    _bf16_row(w, row_bytes, s, z, has_zero, bits, group, n, codes, flat, flat32, base)
                else:
                    _f32_row(w, row_bytes, s, z, has_zero, bits, group, n, codes, flat, base)
            r = end


@numba.njit(cache=True, inline="always")
def _min_max(x: np.ndarray) -> tuple[np.float32, np.float32]:
    """``(min(x), max(x))`` of a float32 row, with four independent running minima and maxima (a single
    chain waits on each comparison: four chains run about three times as fast)."""
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = x[0]
    full = x.shape[0] - x.shape[0] % 4
    for k in range(0, full, 4):
        v0, v1, v2, v3 = x[k], x[k + 1], x[k + 2], x[k + 3]
        a0, a1, a2, a3 = min(a0, v0), min(a1, v1), min(a2, v2), min(a3, v3)
        b0, b1, b2, b3 = max(b0, v0), max(b1, v1), max(b2, v2), max(b3, v3)
    mn, mx = min(min(a0, a1), min(a2, a3)), max(max(b0, b1), max(b2, b3))
    for k in range(full, x.shape[0]):
        mn, mx = min(mn, x[k]), max(mx, x[k])
    return mn, mx


_RINT_MAGIC = np.float32(12582912.0)
"""1.5 * 2^23: for float32 ``|v| <= 2^22``, ``(v + M) - M`` is ``rint(v)`` (round half to even) exactly, as
the addition rounds at the units place; unlike ``np.rint`` (a libm call) it vectorizes."""


@numba.njit(cache=True, inline="always", error_model="numpy")
def grid_params(
    mn: np.float32, mx: np.float32, ratio: np.float32, bits: int, symmetric: bool
) -> tuple[np.float32, np.float32]:
    """(scale, zero as a float32 integer) of a cell with minimum ``mn`` and maximum ``mx``, its range
    ``[min(mn, 0), max(mx, 0)]`` shrunk by ``ratio``: the grid of :mod:`dllm_kernels.reference.grid`, the
    same float32 operations (the zero point rounded with `_RINT_MAGIC`, exactly ``np.rint``)."""
    half = np.float32(1 << (bits - 1))
    q_range = np.float32((1 << bits) - 1)
    lo = min(mn, np.float32(0)) * ratio
    hi = max(mx, np.float32(0)) * ratio
    z = np.float32(0)
    if symmetric:
        s = max(abs(lo), hi) / (q_range / np.float32(2))
    else:
        s = (hi - lo) / q_range
        if s != 0:
            v = min(max(-half - lo / s, -half), half - np.float32(1))
            z = (v + _RINT_MAGIC) - _RINT_MAGIC
    if s == 0:
        s = np.float32(np.finfo(np.float32).eps)
        z = np.float32(0)
    return s, z


@numba.njit(cache=True, inline="always")
def _quantize_row(
    flat_x: np.ndarray,
    base: np.uint64,
    k_cols: int,
    bits: int,
    symmetric: bool,
    clip_ratio: np.float32,
    flat_c: np.ndarray,
) -> tuple[np.float32, np.float32]:
    """Quantize the row ``flat_x[base : base + K]`` into ``flat_c`` (same offsets); returns its (scale,
    zero): the grid of :mod:`dllm_kernels.reference.grid` with one cell, the same float32 operations in
    the same order (the clamped value rounded with `_RINT_MAGIC`, exactly ``np.rint``)."""
    qmin = np.float32(-(1 << (bits - 1)))
    qmax = np.float32((1 << (bits - 1)) - 1)
    mn, mx = _min_max(flat_x[base : base + np.uint64(k_cols)])
    s, z = grid_params(mn, mx, clip_ratio, bits, symmetric)
    for k in range(np.uint64(k_cols)):
        v = min(max(flat_x[base + k] / s + z, qmin), qmax)
        flat_c[base + k] = np.int8((v + _RINT_MAGIC) - _RINT_MAGIC)
    return s, z


@numba.njit(cache=True, inline="always")
def fake_quantize_row(
    flat_x: np.ndarray,
    base: np.uint64,
    k_cols: int,
    bits: int,
    symmetric: bool,
    clip_ratio: np.float32,
    flat_o: np.ndarray,
) -> None:
    """The row ``flat_x[base : base + K]`` quantized (`_quantize_row`) and dequantized, ``float32(code -
    zero) * scale``, into ``flat_o`` at the same offsets (``flat_o`` may be ``flat_x``: in place)."""
    s, z = _quantize_row(flat_x, base, k_cols, bits, symmetric, clip_ratio, flat_o)
    for k in range(np.uint64(k_cols)):
        flat_o[base + k] = (flat_o[base + k] - z) * s


@numba.njit(cache=True, parallel=True)
def quantize_rows(
    x: np.ndarray,
    bits: int,
    symmetric: bool,
    clip_ratio: np.float32,
    chunks: int,
    codes: np.ndarray,
    scale: np.ndarray,
    zero: np.ndarray,
) -> None:
    """Per-row (per-token) quantization of float32 ``x [M, K]`` into int8 ``codes [M, K]``, float32
    ``scale [M]`` and int32 signed ``zero [M]`` (0 when symmetric), fused in one pass per row
    (`_quantize_row`: the same bits as :func:`dllm_kernels.reference.act_quant.quantize_per_token`)."""
    rows, k_cols = x.shape
    flat_x = x.reshape(x.size)
    flat_c = codes.reshape(codes.size)
    for c in numba.prange(chunks):
        for r in range(c * rows // chunks, (c + 1) * rows // chunks):
            s, z = _quantize_row(
                flat_x, np.uint64(r) * np.uint64(k_cols), k_cols, bits, symmetric, clip_ratio, flat_c
            )
            scale[r] = s
            zero[r] = np.int32(z)


@numba.njit(cache=True, inline="always")
def job_rows(
    xs: tuple[np.ndarray, ...], outs: tuple[np.ndarray, ...], job: int, chunks: int
) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """Parallel job ``job`` of ``len(xs) * chunks`` over the 2-D arrays ``xs`` (each cut into ``chunks`` row
    ranges) and their outputs ``outs``: ``(flat x, flat out, columns, first row, end row)``."""
    x = xs[job // chunks]
    out = outs[job // chunks]
    c = job % chunks
    rows, cols = x.shape
    return x.reshape(x.size), out.reshape(out.size), cols, c * rows // chunks, (c + 1) * rows // chunks


@numba.njit(cache=True, parallel=True)
def fake_quantize_rows(
    xs: tuple[np.ndarray, ...],
    bits: int,
    symmetric: bool,
    clip_ratio: np.float32,
    chunks: int,
    outs: tuple[np.ndarray, ...],
) -> None:
    """Per-row quantize-dequantize of each float32 ``xs[i] [M_i, K_i]`` into float32 ``outs[i] [M_i, K_i]``,
    all in one launch (``chunks`` row ranges of each array): each row's codes exactly as `quantize_rows`
    computes them (`_quantize_row`, written into the output as floats), then ``float32(code - zero) *
    scale`` in place, the values ``dllm_kernels.torch_grid.decode`` gives."""
    for job in numba.prange(len(xs) * chunks):
        flat_x, flat_o, k_cols, r0, r1 = job_rows(xs, outs, job, chunks)
        for r in range(r0, r1):
            fake_quantize_row(
                flat_x, np.uint64(r) * np.uint64(k_cols), k_cols, bits, symmetric, clip_ratio, flat_o
            )


@numba.njit(cache=True, parallel=True)
def unpack_stack_int8(
    packed: tuple[np.ndarray, ...],
    meta: np.ndarray,
    n0: int,
    x: np.ndarray,
    bits: int,
    symmetric: bool,
    clip_ratio: np.float32,
    x_codes: np.ndarray,
    x_scale: np.ndarray,
    x_zero: np.ndarray,
    chunks: int,
    out: np.ndarray,
) -> None:
    """Rows ``n0 .. n0 + rows`` of the signed codes ``u - 2^(bits_j - 1)`` of symmetric weights stacked along
    N (``packed[j]``, ``meta[j] = (first stacked row, bits_j, ...)`` as in `dequantize_stack`) into int8
    ``out [rows, K]``; in the same parallel pass, float32 activations ``x [M, K]`` quantized per token as
    `quantize_rows` does (into ``x_codes``, ``x_scale``, ``x_zero``; ``M = 0`` quantizes nothing). One
    launch feeds a whole integer GEMM."""
    rows, k_cols = out.shape
    flat = out.reshape(out.size)
    flat_x = x.reshape(x.size)
    flat_c = x_codes.reshape(x_codes.size)
    m_rows = x.shape[0]
    for c in numba.prange(chunks):
        codes = np.empty(k_cols, dtype=np.int32)
        r, r_end = c * rows // chunks, (c + 1) * rows // chunks
        while r < r_end:
            j, end = member_rows(meta, n0, r, r_end)
            w = packed[j]
            w_bits = meta[j, 1]
            offset = 1 << (w_bits - 1)
            row_bytes = w.reshape(w.size).view(np.uint8)
            row_words = np.uint64(w.shape[1] * 4)
            for rr in range(r, end):
                base = np.uint64(rr) * np.uint64(k_cols)
                n = n0 + rr - meta[j, 0]
                if w_bits == 8:  # one byte per value: no unpacking, a vectorized subtraction
                    src = np.uint64(n) * row_words
                    for k in range(np.uint64(k_cols)):
                        flat[base + k] = np.int32(row_bytes[src + k]) - offset
                    continue
                _unpack_row(w, row_bytes, n, w_bits, codes)
                for k in range(np.uint64(k_cols)):
                    flat[base + k] = codes[k] - offset
            r = end
        for m in range(c * m_rows // chunks, (c + 1) * m_rows // chunks):
            s, z = _quantize_row(
                flat_x, np.uint64(m) * np.uint64(k_cols), k_cols, bits, symmetric, clip_ratio, flat_c
            )
            x_scale[m] = s
            x_zero[m] = np.int32(z)


@numba.njit(cache=True, parallel=True)
def scale_accumulate(
    acc: np.ndarray,
    x_scale: np.ndarray,
    w_scale: np.ndarray,
    chunks: int,
    out: np.ndarray,
) -> None:
    """``out[m, n] = sum_g (float32(acc[g, m, n]) * x_scale[m]) * w_scale[n, g]`` in float32, the groups
    added in order (the first assigned): the epilogue of the integer GEMMs of int32 ``acc [G, M, N]``, one
    per column group, in one launch."""
    groups, rows, cols = acc.shape
    flat_acc = acc.reshape(acc.size)
    flat_out = out.reshape(out.size)
    ws = np.ascontiguousarray(w_scale.T)
    plane = np.uint64(rows) * np.uint64(cols)
    for c in numba.prange(chunks):
        for m in range(c * rows // chunks, (c + 1) * rows // chunks):
            base = np.uint64(m) * np.uint64(cols)
            xs = x_scale[m]
            w0 = ws[0]
            for n in range(np.uint64(cols)):
                flat_out[base + n] = (np.float32(flat_acc[base + n]) * xs) * w0[n]
            for g in range(1, groups):
                wg = ws[g]
                src = np.uint64(g) * plane + base
                for n in range(np.uint64(cols)):
                    flat_out[base + n] += (np.float32(flat_acc[src + n]) * xs) * wg[n]


@numba.njit(cache=True, parallel=True)
def transpose(src: np.ndarray, chunks: int, dst: np.ndarray) -> None:
    """``dst [M, N] = src [N, M]^T`` (float32), ``chunks`` ranges of ``src`` rows in parallel, 64 rows at a
    time (their ``M`` columns stay in L1 while ``dst`` is written in runs of 64)."""
    rows, cols = src.shape
    for c in numba.prange(chunks):
        hi = (c + 1) * rows // chunks
        for b0 in range(c * rows // chunks, hi, 64):
            b1 = min(hi, b0 + 64)
            for i in range(cols):
                out = dst[i]
                for j in range(b0, b1):
                    out[j] = src[j, i]
