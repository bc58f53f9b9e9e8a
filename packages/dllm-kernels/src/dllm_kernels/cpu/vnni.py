"""Integer GEMM with group-wise weight scales on x86 CPUs with AVX512-VNNI (``vpdpbusd``), in one launch.

For int8 activation codes ``xq [M, K]`` with per-token scales ``x_scale [M]`` and symmetric weight codes
``u - 2^(bits-1)`` (stored unsigned in the pack-quantized layout, scales ``[N, G]``), `grouped_int_gemm`
computes ``out[m, n] = sum_g (float32(acc_g[m, n]) * x_scale[m]) * scale[n, g]``, ``acc_g`` the exact int32
dot product over group ``g``'s columns and the groups added in order (the first assigned): bit-identical to
:func:`dllm_kernels.reference.gemm.grouped_int_gemm`. torch's CPU int8 GEMM (``torch._int_mm``) has no
per-group scaling, so without this kernel a group-wise layer runs one ``_int_mm`` per group (K = the group
size) into an int32 ``[G, M, N]`` buffer and a separate epilogue pass over it.

Each parallel job owns a panel of 64 output columns and a range of tokens:

1. The panel's codes are unpacked into ``[K/4][64]`` 32-bit words, word ``(i, c)`` the four codes
   ``4i .. 4i + 3`` of column ``c`` as signed bytes (a 64-byte row of words is what ``vpdpbusd`` multiplies
   for 16 columns), and the float32 scales into ``[G][64]``. A second intrinsic (`_panel_block`) loads 16
   columns x 64 codes as 16 vectors (4-bit codes widened from 32 bytes), transposes them in registers and
   sums each column's codes.
2. Per block of 4 tokens (single tokens for the ragged tail) and per group, a micro-kernel written in LLVM IR
   (`_tile`, a Numba intrinsic) keeps 4 x 4 vectors of 16 int32 sums in registers; per four columns of
   K it broadcasts four activation bytes of each token and multiplies them with the panel's four weight
   vectors (``vpdpbusd``: u8 x s8, four products per lane). The instruction's first operand is unsigned, so
   activations enter as ``code + 128`` (the sign bit flipped) and ``128 * sum_{k in g} w[n, k]`` (per column
   and group, summed while unpacking) is subtracted from each sum: still exact.
3. The group's epilogue ``(float32(acc) * x_scale[m]) * scale[n, g]`` goes straight into the output tile in
   memory (assigned for the first group, added for the others): the int32 sums never leave registers.

The columns are padded to a multiple of 64 (zero codes, zero scales). `supported` says which weights it
takes (one code width, 8 or 4 bits; groups of a multiple of 64 columns, so g64, g128 and per-channel
weights with K a multiple of 64) and `available` whether this CPU and Numba's target can run it.
"""

from __future__ import annotations

import functools

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from dllm_kernels.cpu.tiles import member_rows

__all__ = ["PANEL", "available", "grouped_int_gemm", "supported"]

PANEL = 64
"""Output columns per job: four vectors of 16 int32 lanes."""

_WORD_STRIDE = PANEL * 4
"""Bytes from one row of panel words (four codes of every panel column) to the next."""

_I8, _I32, _I64, _F32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
_VI32, _VF32 = ir.VectorType(_I32, 16), ir.VectorType(_F32, 16)
_VPDPBUSD = "llvm.x86.avx512.vpdpbusd.512"
_SIGN_BITS = -0x7F7F7F80
"""0x80808080 as an i32: the sign bit of each of four bytes (xor: a signed byte code + 128 as unsigned)."""


@functools.cache
def available() -> bool:
    """True if the host has AVX512-VNNI and AVX512-BW and Numba compiles for the host (no ``NUMBA_CPU_NAME``
    / ``NUMBA_CPU_FEATURES`` override that could leave the instruction out)."""
    if numba.config.CPU_NAME or numba.config.CPU_FEATURES:
        return False
    features = llvmlite.binding.get_host_cpu_features()
    return bool(features.get("avx512vnni") and features.get("avx512bw"))


def supported(widths: tuple[int, ...], group: int) -> bool:
    """True if `grouped_int_gemm` runs here for stacked weights of code ``widths`` (one width, 8 or 4 bits)
    with ``group`` columns per scale (a multiple of 64: the panel is unpacked 64 codes of a row at a time)."""
    return len(set(widths)) == 1 and widths[0] in (4, 8) and group % 64 == 0 and available()


def _byte_pointer(context, builder, array_type, array, offset):  # type: ignore[no-untyped-def]
    """``i8*`` to byte ``offset`` of a Numba array's data."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(builder.bitcast(data, _I8.as_pointer()), [offset])


def _load(builder, base, offset, ty, align):  # type: ignore[no-untyped-def]
    """The ``ty`` value at byte ``offset`` from the ``i8*`` ``base``."""
    return builder.load(builder.bitcast(builder.gep(base, [offset]), ty.as_pointer()), align=align)


def _splat(builder, scalar, vector_type):  # type: ignore[no-untyped-def]
    """``scalar`` in every lane of ``vector_type``."""
    lanes = ir.Constant(vector_type, None)
    one = builder.insert_element(lanes, scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, lanes, ir.Constant(_VI32, [0] * 16))


def _dot(builder):  # type: ignore[no-untyped-def]
    """The declaration of ``vpdpbusd`` (16 lanes: ``acc + sum of 4 u8 x s8 products``) in this module."""
    module = builder.module
    return module.globals.get(_VPDPBUSD) or ir.Function(
        module, ir.FunctionType(_VI32, [_VI32, _VI32, _VI32]), _VPDPBUSD
    )


def _emit_tile(builder, rows, pointers, ldx, steps, ldo, first):  # type: ignore[no-untyped-def]
    """The IR of `_tile` for ``rows`` tokens, at the builder's position (which it leaves at its end).
    ``pointers``: ``i8*`` to the panel's group, the first token's group codes, the corrections, the
    scales, the first token's scale and its first output."""
    weights, codes, corrections, scales, x_scales, outputs = pointers
    entry = builder.block
    loop = builder.append_basic_block("vnni_loop")
    done = builder.append_basic_block("vnni_done")
    builder.branch(loop)

    builder.position_at_end(loop)
    step = builder.phi(_I64)
    sums = [[builder.phi(_VI32) for _ in range(4)] for _ in range(rows)]
    row = builder.mul(step, ir.Constant(_I64, _WORD_STRIDE))
    w = [_load(builder, weights, builder.add(row, ir.Constant(_I64, 64 * b)), _VI32, 1) for b in range(4)]
    flip = ir.Constant(_I32, _SIGN_BITS)
    at = builder.mul(step, ir.Constant(_I64, 4))
    new = []
    for r in range(rows):
        four = _load(builder, codes, builder.add(builder.mul(ir.Constant(_I64, r), ldx), at), _I32, 1)
        a = _splat(builder, builder.xor(four, flip), _VI32)  # (a vector xor stalls LLVM's optimizer)
        new.append([builder.call(_dot(builder), [sums[r][b], a, w[b]]) for b in range(4)])
    following = builder.add(step, ir.Constant(_I64, 1))
    step.add_incoming(ir.Constant(_I64, 0), entry)
    step.add_incoming(following, loop)
    for r in range(rows):
        for b in range(4):
            sums[r][b].add_incoming(ir.Constant(_VI32, [0] * 16), entry)
            sums[r][b].add_incoming(new[r][b], loop)
    builder.cbranch(builder.icmp_signed("<", following, steps), loop, done)

    builder.position_at_end(done)
    c = [_load(builder, corrections, ir.Constant(_I64, 64 * b), _VI32, 4) for b in range(4)]
    s = [_load(builder, scales, ir.Constant(_I64, 64 * b), _VF32, 4) for b in range(4)]
    for r in range(rows):
        token = _splat(builder, _load(builder, x_scales, ir.Constant(_I64, 4 * r), _F32, 4), _VF32)
        line = builder.mul(ir.Constant(_I64, r), ldo)
        for b in range(4):
            exact = builder.sitofp(builder.sub(new[r][b], c[b]), _VF32)
            value = builder.fmul(builder.fmul(exact, token), s[b])
            at_out = builder.gep(outputs, [builder.add(line, ir.Constant(_I64, 64 * b))])
            target = builder.bitcast(at_out, _VF32.as_pointer())
            before = builder.load(target, align=4)
            builder.store(builder.select(first, value, builder.fadd(before, value)), target, align=4)


@intrinsic
def _tile(
    typingctx,
    four,
    panel,
    p_off,
    x,
    x_off,
    ldx,
    steps,
    corr,
    c_off,
    xs,
    s_off,
    ws,
    w_off,
    out,
    o_off,
    ldo,
    first,
):  # type: ignore[no-untyped-def]
    """The micro-kernel: 4 tokens (``four``) or 1 x `PANEL` columns x one group. Byte offsets: ``p_off``
    the group's first row of panel words (``steps`` rows of `_WORD_STRIDE` bytes); ``x_off`` the first
    token's first code of the group in the int8 codes ``x`` (``ldx`` bytes per token); ``c_off`` / ``w_off``
    the group's 64 int32 corrections / float32 scales; ``s_off`` the first token's float32 scale; ``o_off``
    the first token's first output in float32 ``out`` (``ldo`` bytes per token). ``first``: assign the
    group's products instead of adding them."""
    i64 = types.int64
    sig = types.void(
        types.boolean, panel, i64, x, i64, i64, i64, corr, i64, xs, i64, ws, i64, out, i64, i64, types.boolean
    )

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        four, ldx, steps, ldo, first = (args[i] for i in (0, 5, 6, 15, 16))
        kinds = signature.args
        pointers = [
            _byte_pointer(context, builder, kinds[i], args[i], args[i + 1]) for i in (1, 3, 7, 11, 9, 13)
        ]
        rows4 = builder.append_basic_block("vnni_rows4")
        rows1 = builder.append_basic_block("vnni_rows1")
        end = builder.append_basic_block("vnni_end")
        builder.cbranch(four, rows4, rows1)
        for block, rows in ((rows4, 4), (rows1, 1)):
            builder.position_at_end(block)
            _emit_tile(builder, rows, pointers, ldx, steps, ldo, first)
            builder.branch(end)
        builder.position_at_end(end)
        return context.get_dummy_value()

    return sig, codegen


def _transpose16(builder, rows):  # type: ignore[no-untyped-def]
    """The 16 x 16 transpose of 16 vectors of 16 lanes: four stages, stage ``b`` swapping bit ``b`` of the
    row and lane indices (the off-diagonal 2^b blocks of each 2^(b+1) block change places)."""
    for bit in range(4):
        h = 1 << bit
        keep = [c if not c & h else 16 + c - h for c in range(16)]
        take = [c + h if not c & h else 16 + c for c in range(16)]
        swapped = list(rows)
        for r in range(16):
            if not r & h:
                low, high = rows[r], rows[r | h]
                swapped[r] = builder.shuffle_vector(low, high, ir.Constant(_VI32, keep))
                swapped[r | h] = builder.shuffle_vector(low, high, ir.Constant(_VI32, take))
        rows = swapped
    return rows


def _panel_block(bits: int):  # type: ignore[no-untyped-def]
    """A Numba intrinsic unpacking 16 weight rows x 64 codes (16 words) of ``bits``-bit codes (8 or 4)::

        block(addresses, word, shift, panel, p_off, corr, c_off)

    ``addresses``: int64 ``[16]``, the address of each row's packed codes (a zero row for padding);
    ``word``: the first of the 16 words of four codes; each word becomes ``(u + shift) ^ 0x80808080`` (the
    signed codes as bytes) at byte ``p_off + i * _WORD_STRIDE + 4 * r`` of ``panel``; 128 x the block's
    code sum of each row is added to the int32 at byte ``c_off + 4 * r`` of ``corr``."""

    @intrinsic
    def block(typingctx, addresses, word, shift, panel, p_off, corr, c_off):  # type: ignore[no-untyped-def]
        i64 = types.int64
        sig = types.void(addresses, i64, i64, panel, i64, corr, i64)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            addresses, word, shift, panel, p_off, corr, c_off = args
            kinds = signature.args
            dot = _dot(builder)
            starts = context.make_array(kinds[0])(context, builder, addresses).data
            skip = builder.mul(word, ir.Constant(_I64, bits // 2))  # bytes before the word
            add = _splat(builder, builder.trunc(shift, _I32), _VI32)
            rows = []
            for r in range(16):
                start = builder.inttoptr(
                    builder.load(builder.gep(starts, [ir.Constant(_I64, r)])), _I8.as_pointer()
                )
                if bits == 8:
                    v = _load(builder, start, skip, _VI32, 1)
                else:  # 32 bytes of two codes each -> 64 bytes, low nibble first
                    pairs = builder.zext(
                        _load(builder, start, skip, ir.VectorType(_I8, 32), 1),
                        ir.VectorType(ir.IntType(16), 32),
                    )
                    low = builder.and_(pairs, ir.Constant(pairs.type, [15] * 32))
                    high = builder.shl(
                        builder.lshr(pairs, ir.Constant(pairs.type, [4] * 32)),
                        ir.Constant(pairs.type, [8] * 32),
                    )
                    v = builder.bitcast(builder.or_(low, high), _VI32)
                rows.append(builder.xor(builder.add(v, add), ir.Constant(_VI32, [_SIGN_BITS] * 16)))
            words = _transpose16(builder, rows)
            out = _byte_pointer(context, builder, kinds[3], panel, p_off)
            total = ir.Constant(_VI32, [0] * 16)
            ones = ir.Constant(_VI32, [0x01010101] * 16)
            for i, v in enumerate(words):
                target = builder.gep(out, [ir.Constant(_I64, i * _WORD_STRIDE)])
                builder.store(v, builder.bitcast(target, _VI32.as_pointer()), align=4)
                total = builder.call(dot, [total, ones, v])
            sums = builder.bitcast(_byte_pointer(context, builder, kinds[5], corr, c_off), _VI32.as_pointer())
            scaled = builder.shl(total, ir.Constant(_VI32, [7] * 16))
            builder.store(builder.add(builder.load(sums, align=4), scaled), sums, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return block


_block8 = _panel_block(8)
_block4 = _panel_block(4)


@numba.njit(cache=True, inline="always")
def _unpack_panel(
    packed: tuple[np.ndarray, ...],
    meta: np.ndarray,
    scale: np.ndarray,
    n0: int,
    group: int,
    zeros: np.ndarray,
    addresses: np.ndarray,
    panel: np.ndarray,
    corr: np.ndarray,
    ws: np.ndarray,
) -> None:
    """Stacked rows ``n0 .. n0 + PANEL`` of 8- or 4-bit codes (all members one width) into the job's
    ``panel`` (uint32 ``[K/4 * PANEL]``, see the module docstring), ``corr`` (int32 ``[G * PANEL]``, 128 x
    each group's code sum) and ``ws`` (float32 ``[G * PANEL]``, the scales), 16 rows at a time; rows past N
    read ``zeros`` (at least a row of bytes) and get zero scales. ``addresses``: int64 scratch ``[16]``."""
    rows, groups = scale.shape
    words = panel.shape[0] // PANEL
    steps = group // 4
    bits = meta[0, 1]
    shift = (128 - (1 << (bits - 1))) * 0x01010101  # u + 128 - z: the signed code, sign bit flipped
    corr[:] = 0
    for c in range(PANEL):
        for g in range(groups):
            ws[g * PANEL + c] = scale[n0 + c, g] if n0 + c < rows else np.float32(0)
    for c0 in range(0, PANEL, 16):
        for r in range(16):
            n = n0 + c0 + r
            if n < rows:
                j, _ = member_rows(meta, n, 0, 1)
                w = packed[j]
                addresses[r] = w.ctypes.data + (n - meta[j, 0]) * w.shape[1] * 4
            else:
                addresses[r] = zeros.ctypes.data
        for i in range(0, words, 16):
            p_off = (i * PANEL + c0) * 4
            c_off = (i // steps * PANEL + c0) * 4
            if bits == 8:
                _block8(addresses, i, shift, panel, p_off, corr, c_off)
            else:
                _block4(addresses, i, shift, panel, p_off, corr, c_off)


@numba.njit(cache=True, parallel=True)
def _launch(
    packed: tuple[np.ndarray, ...],
    meta: np.ndarray,
    scale: np.ndarray,
    xq: np.ndarray,
    x_scale: np.ndarray,
    group: int,
    token_parts: int,
    zeros: np.ndarray,
    out: np.ndarray,
) -> None:
    """`grouped_int_gemm`'s parallel loop: jobs of one column panel x one of ``token_parts`` token ranges."""
    m_rows, k_cols = xq.shape
    groups = k_cols // group
    steps = group // 4
    panels = out.shape[1] // PANEL
    flat_x = xq.reshape(xq.size)
    flat_o = out.reshape(out.size)
    ldo = out.shape[1] * 4
    blocks = m_rows // 4
    for job in numba.prange(panels * token_parts):
        p, part = job // token_parts, job % token_parts
        n0 = p * PANEL
        panel = np.empty(k_cols // 4 * PANEL, dtype=np.uint32)
        corr = np.empty(groups * PANEL, dtype=np.int32)
        ws = np.empty(groups * PANEL, dtype=np.float32)
        _unpack_panel(packed, meta, scale, n0, group, zeros, np.empty(16, np.int64), panel, corr, ws)
        m = 4 * (part * blocks // token_parts)
        stop = 4 * ((part + 1) * blocks // token_parts) if part < token_parts - 1 else m_rows
        while m < stop:  # blocks of 4 tokens, then the last part's tail one by one
            four = m + 4 <= stop
            for g in range(groups):
                p_off, c_off = g * steps * _WORD_STRIDE, g * _WORD_STRIDE
                x_off, o_off = m * k_cols + g * group, m * ldo + 4 * n0
                _tile(
                    four, panel, p_off, flat_x, x_off, k_cols, steps, corr, c_off, x_scale, 4 * m, ws, c_off,
                    flat_o, o_off, ldo, g == 0,
                )  # fmt: skip
            m += 4 if four else 1


def grouped_int_gemm(
    packed: tuple[np.ndarray, ...],
    meta: np.ndarray,
    scale: np.ndarray,
    xq: np.ndarray,
    x_scale: np.ndarray,
    group: int,
) -> np.ndarray:
    """int8 ``xq [M, K]`` (float32 per-token ``x_scale [M]``) times symmetric packed weights stacked along N
    -> float32 ``[M, N]`` (see the module docstring; bit-identical to the reference).

    Args:
        packed: the members' pack-quantized int32 codes ``[N_j, words]``; meta: int64 ``[members, >=2]``
            rows of (first stacked row, bits); scale: float32 ``[N, K/group]``, the members' scales stacked;
        group: columns per scale, a multiple of 64 dividing K; every member 8- or 4-bit, one width
            (`supported`).
    """
    m_rows, k_cols = xq.shape
    n_rows = scale.shape[0]
    panels = -(-n_rows // PANEL)
    threads = numba.get_num_threads()
    token_parts = max(1, min(m_rows // 4, -(-threads // panels)))
    out = np.empty((m_rows, panels * PANEL), dtype=np.float32)
    _launch(packed, meta, scale, xq, x_scale, group, token_parts, np.zeros(k_cols, np.uint8), out)
    return out if out.shape[1] == n_rows else np.ascontiguousarray(out[:, :n_rows])
