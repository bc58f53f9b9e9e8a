"""The fast CPU backend (``backend="cpu"`` of :mod:`dllm_kernels.dispatch`): packed weights unpacked tile by
tile by the Numba kernels of :mod:`dllm_kernels.cpu.tiles` (parallel over rows) into a reused scratch tile,
multiplied by torch's CPU GEMMs (MKL / oneDNN, multi-threaded):

* `wna16_gemm` (`PackedWeight.matmul` for a weight prepared once, `WeightStack.matmul` for weights that
  read one input) computes in the GEMM's precision: bfloat16 activations meet bfloat16 weight tiles (each
  weight ``float32(u - z) * scale`` rounded to the nearest bf16) in a bf16 GEMM with float32 accumulation,
  result rounded to bf16 (what a W4A16 layer does in a bf16 model; native on CPUs with AVX512-BF16 or AMX);
  float32 (or fp16 / float64, computed in float32) activations meet the exact float32 weights of the
  reference. Only the accumulation order differs from :func:`dllm_kernels.reference.gemm.wna16_gemm`.
* `quantize_per_token` quantizes activations per token in one fused pass, bit-identical to the reference;
* `int8_gemm` runs ``torch._int_mm`` (int8 x int8 -> int32, exact) and the reference's float32 epilogue
  ``(float32(acc) * x_scale[m]) * w_scale[n]``; `w4a8_gemm`, `w4a4_gemm` and the integer GEMMs of packed
  weights (`WeightStack.int_matmul`, per channel or group-wise) run :mod:`dllm_kernels.cpu.vnni` on CPUs
  with AVX512-VNNI (unpacking, int8 dot products and the epilogue of every group in one launch), elsewhere
  ``torch._int_mm`` per column group and the epilogue: bit-identical to the Numba references either way.

The weight is never materialised whole: tiles hold at most `TILE_BYTES` (all of a small layer), so the
resident weight stays packed. Call these through :mod:`dllm_kernels.dispatch`, which validates arguments.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dllm_kernels.cpu import tiles, vnni

__all__ = [
    "TILE_BYTES",
    "PackedWeight",
    "WeightStack",
    "fake_quantize_per_token",
    "int8_gemm",
    "quantize_per_token",
    "stacked_int_matmul",
    "stacked_matmul",
    "tile_matmul",
    "w4a4_gemm",
    "w4a8_gemm",
    "wna16_gemm",
]

TILE_BYTES = 8 << 20
"""Largest dequantized tile (bytes): a whole tiny layer, 1024 rows of a K=4096 bf16 weight."""

_scratch = threading.local()


_TILE_NP_DTYPE = {torch.bfloat16: np.uint16, torch.float32: np.float32, torch.int8: np.int8}
"""The NumPy dtype a tile kernel writes for each GEMM operand dtype (bf16 as uint16 bit patterns)."""


def _tile_views(rows: int, cols: int, dtype: torch.dtype) -> tuple[np.ndarray, torch.Tensor]:
    """A ``[rows, cols]`` tile of this thread's scratch buffer for a GEMM's weight operand in ``dtype``
    (bfloat16, float32 or int8): the NumPy view a tile kernel writes and the torch view of the same memory.
    The buffer grows on demand and never shrinks; the views of each shape are kept until it grows (a layer
    called again pays no view construction)."""
    np_dtype = _TILE_NP_DTYPE[dtype]
    need = rows * cols * np.dtype(np_dtype).itemsize
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.nbytes < need:
        _scratch.buf = buf = np.empty(need, dtype=np.uint8)
        _scratch.views = {}
    pair = _scratch.views.get((rows, cols, dtype))
    if pair is None:
        tile = buf[:need].view(np_dtype).reshape(rows, cols)
        pair = _scratch.views[(rows, cols, dtype)] = (tile, _as_tensor(tile))
    return pair


def _tile_rows(n: int, k: int, itemsize: int) -> int:
    return max(1, min(n, TILE_BYTES // max(1, k * itemsize)))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _as_tensor(tile: np.ndarray) -> torch.Tensor:
    """A weight tile as the GEMM's operand (uint16 bit patterns viewed as bfloat16)."""
    weight = torch.from_numpy(tile)
    return weight.view(torch.bfloat16) if tile.dtype == np.uint16 else weight


@dataclass(frozen=True)
class PackedWeight:
    """A pack-quantized weight ``W [N, K]`` held as NumPy views for the tile kernels, validated once (by
    `dllm_kernels.dispatch` or the layer that owns it) so that repeated GEMMs pay no per-call checks.

    Attributes:
        packed: int32 ``[N, ceil(K*bits/32)]``; scale: float32 ``[N, K/group]``; zero: int32 ``[N, K/group]``
            unsigned zero points (a ``[1, 1]`` placeholder when ``has_zero`` is False); bits; group (columns
            per scale, K for per-channel); in_features (K).
    """

    packed: np.ndarray
    scale: np.ndarray
    zero: np.ndarray
    has_zero: bool
    bits: int
    group: int
    in_features: int

    @classmethod
    def from_tensors(
        cls,
        w_packed: torch.Tensor,
        scale: torch.Tensor,
        zero: torch.Tensor | None,
        bits: int,
        group_size: int | None,
        in_features: int,
    ) -> PackedWeight:
        """Views of CPU tensors (copied only where a dtype or layout change is needed)."""
        return cls(
            packed=_np(w_packed),
            scale=_np(scale.to(torch.float32)),
            zero=np.zeros((1, 1), dtype=np.int32) if zero is None else _np(zero),
            has_zero=zero is not None,
            bits=bits,
            group=in_features if group_size is None else group_size,
            in_features=in_features,
        )

    @property
    def out_features(self) -> int:
        """N, the weight's rows."""
        return self.packed.shape[0]

    @functools.cached_property
    def stack(self) -> WeightStack:
        """This weight as a one-member `WeightStack` (what its float GEMMs run through)."""
        return WeightStack.of((self,))

    def dequantize_into(self, tile: np.ndarray, n0: int = 0) -> None:
        """Rows ``n0 .. n0 + len(tile)`` of the dequantized weight into ``tile [rows, K]``: float32 values
        for a float32 tile, bf16 bit patterns (round to nearest even) for a uint16 tile."""
        self.stack.dequantize_into(tile, n0)

    def matmul(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``x [M, K] @ W^T`` -> ``[M, N]`` in the GEMM's precision ``dtype`` (see `WeightStack.matmul`)."""
        return self.stack.matmul(x, dtype)

    def int_matmul(self, xq: torch.Tensor, x_scale: torch.Tensor) -> torch.Tensor:
        """Integer activations ``xq [M, K]`` (int8 codes, per-token float32 ``x_scale [M]``) times this
        weight's symmetric codes -> float32 ``[M, N]`` (`WeightStack.int_matmul`)."""
        return self.stack.int_matmul(xq, x_scale)

    def unpack_into(self, tile: np.ndarray, n0: int = 0) -> None:
        """Rows ``n0 .. n0 + len(tile)`` of the signed codes ``u - 2^(bits-1)`` into int8 ``tile [rows,
        K]``. Raises ``ValueError`` for a weight with zero points (its codes are not symmetric)."""
        self.stack.unpack_into(tile, n0)

    @functools.cached_property
    def column_term(self) -> torch.Tensor:
        """float32 ``[N]``: ``sum_g scale[n, g] * sum_{k in g} codes[n, k]``, the zero-point correction of
        asymmetric activations (``y -= x_scale * x_zero * column_term``)."""
        n, k = self.packed.shape[0], self.in_features
        codes = np.empty((n, k), dtype=np.int8)
        self.unpack_into(codes)
        sums = torch.from_numpy(codes).to(torch.float32).reshape(n, k // self.group, self.group).sum(2)
        return (torch.from_numpy(self.scale) * sums).sum(1)


_TokenQuant = tuple[np.ndarray, int, bool, np.float32, np.ndarray, np.ndarray, np.ndarray]
"""Per-token quantization riding on a code-unpacking launch: float32 ``x [M, K]``, bits, symmetric, clip
ratio, and the outputs ``codes`` int8 ``[M, K]``, ``scale`` float32 ``[M]``, ``zero`` int32 ``[M]``."""


def _token_quant(x: torch.Tensor, bits: int, symmetric: bool, clip_ratio: float) -> _TokenQuant:
    """The arguments of a per-token quantization of ``x [M, K]``, its output buffers allocated."""
    xf = _np(x.to(torch.float32))
    m, k = xf.shape
    codes = np.empty((m, k), dtype=np.int8)
    return xf, bits, symmetric, np.float32(clip_ratio), codes, np.empty(m, np.float32), np.empty(m, np.int32)


def _token_quant_result(quant: _TokenQuant) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(codes int8 [M, K], scale float32 [M], zero int32 [M] or None when symmetric)`` of ``quant``."""
    _, _, symmetric, _, codes, scale, zero = quant
    return torch.from_numpy(codes), torch.from_numpy(scale), None if symmetric else torch.from_numpy(zero)


_NO_QUANT = _token_quant(torch.empty(0, 0), 8, True, 1.0)
"""No quantization: zero rows."""


def _quantize(quant: _TokenQuant) -> None:
    """Run ``quant`` in a launch of its own (`tiles.quantize_rows`; nothing for `_NO_QUANT`)."""
    xf, bits, symmetric, clip, codes, scale, zero = quant
    if len(xf):
        tiles.quantize_rows(xf, bits, symmetric, clip, tiles.row_chunks(len(xf)), codes, scale, zero)


@dataclass(frozen=True, eq=False)
class WeightStack:
    """Packed weights with one K stacked along N (q/k/v, gate/up, or one weight alone), held as the
    arguments of `tiles.dequantize_stack`, built once by whoever runs the stack repeatedly.

    Attributes:
        weights: the members, in column-block order; packed, scale, zero: their arrays as tuples;
            meta: int64 ``[members, 4]`` rows of (first stacked row, bits, group, has_zero).
    """

    weights: tuple[PackedWeight, ...]
    packed: tuple[np.ndarray, ...]
    scale: tuple[np.ndarray, ...]
    zero: tuple[np.ndarray, ...]
    meta: np.ndarray

    @classmethod
    def of(cls, weights: Sequence[PackedWeight]) -> WeightStack:
        """The stack of ``weights``. Raises ``ValueError`` if their ``in_features`` differ."""
        weights = tuple(weights)
        k = weights[0].in_features
        if any(w.in_features != k for w in weights):
            raise ValueError(
                f"stacked weights must share in_features, got {[w.in_features for w in weights]}"
            )
        starts = np.cumsum([0] + [w.out_features for w in weights[:-1]])
        meta = np.array(
            [(s, w.bits, w.group, w.has_zero) for s, w in zip(starts, weights, strict=True)], dtype=np.int64
        )
        return cls(
            weights,
            tuple(w.packed for w in weights),
            tuple(w.scale for w in weights),
            tuple(w.zero for w in weights),
            meta,
        )

    @classmethod
    def refreshed(cls, stack: WeightStack | None, weights: Sequence[PackedWeight]) -> WeightStack:
        """``stack`` if it holds exactly ``weights`` (the same objects), else their new stack: what a runner
        that keeps its stack between calls asks for each call, so that a member that prepared its weight
        anew (moved, re-quantized) is seen at once."""
        if stack is None or len(stack.weights) != len(weights):
            return cls.of(weights)
        same = all(a is b for a, b in zip(stack.weights, weights, strict=True))
        return stack if same else cls.of(weights)

    @property
    def in_features(self) -> int:
        """K, shared by the members."""
        return self.weights[0].in_features

    @functools.cached_property
    def out_features(self) -> int:
        """N, the members' rows together."""
        return int(self.meta[-1, 0]) + self.weights[-1].out_features

    def dequantize_into(self, tile: np.ndarray, n0: int = 0) -> None:
        """Stacked rows ``n0 .. n0 + len(tile)`` into ``tile [rows, K]``: bf16 bit patterns for a uint16
        tile, exact float32 values for a float32 tile."""
        tiles.dequantize_stack(
            self.packed, self.scale, self.zero, self.meta, n0, tiles.row_chunks(len(tile)), tile
        )

    def dequantized(self, n0: int, rows: int, dtype: torch.dtype) -> torch.Tensor:
        """Stacked rows ``n0 .. n0 + rows`` dequantized into this thread's scratch tile, as the GEMM operand
        ``[rows, K]`` in ``dtype`` (bfloat16 or float32; see `dequantize_into`). The tile is overwritten by
        the next call on this thread: use it before asking for another."""
        tile, weight = _tile_views(rows, self.in_features, dtype)
        self.dequantize_into(tile, n0)
        return weight

    def matmul(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``x [M, K]`` times every member, in one GEMM per tile of rows: ``[M, N_1 + N_2 + ...]``, column
        blocks in member order. ``dtype`` is the GEMM's precision (default: bfloat16 for bfloat16 ``x``,
        else float32). bfloat16: ``x`` and the weights rounded to bf16, float32 accumulation, a bf16 result.
        float32: exact float32 weights, a float32 result. Tiles hold at most `TILE_BYTES`; a small stack is
        one tile and one GEMM."""
        if dtype is None:
            dtype = torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float32
        if dtype not in (torch.bfloat16, torch.float32):
            raise ValueError(f"the GEMM precision must be torch.bfloat16 or torch.float32, got {dtype}")
        n, k = self.out_features, self.in_features
        x = x.to(dtype).contiguous()
        step = _tile_rows(n, k, 2 if dtype == torch.bfloat16 else 4)
        parts = [tile_matmul(x, self.dequantized(n0, min(step, n - n0), dtype)) for n0 in range(0, n, step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    @functools.cached_property
    def _int_group(self) -> int:
        """The members' shared group size, checked once: raises ``ValueError`` unless every member has
        symmetric codes (no zero points) and one group size."""
        if any(w.has_zero for w in self.weights):
            raise ValueError("integer GEMMs need symmetric weight codes (this weight has zero points)")
        group = self.weights[0].group
        if any(w.group != group for w in self.weights):
            raise ValueError(
                "stacked weights must share in_features and group size, got "
                f"{[(w.in_features, w.group) for w in self.weights]}"
            )
        return group

    @functools.cached_property
    def column_term(self) -> torch.Tensor:
        """float32 ``[N]``: the members' `PackedWeight.column_term`, stacked (computed once)."""
        terms = [w.column_term for w in self.weights]
        return terms[0] if len(terms) == 1 else torch.cat(terms)

    @functools.cached_property
    def _int_scale(self) -> np.ndarray:
        """float32 ``[N, K/group]``: the members' scales, stacked."""
        return self.scale[0] if len(self.scale) == 1 else np.concatenate(self.scale)

    def unpack_into(self, tile: np.ndarray, n0: int = 0, quantize: _TokenQuant = _NO_QUANT) -> None:
        """Stacked rows ``n0 .. n0 + len(tile)`` of the signed codes ``u - 2^(bits-1)`` into int8 ``tile
        [rows, K]``, and in the same launch the per-token quantization ``quantize`` asks for. Raises
        ``ValueError`` for weights with zero points or different group sizes."""
        _ = self._int_group
        tiles.unpack_stack_int8(self.packed, self.meta, n0, *quantize, tiles.row_chunks(len(tile)), tile)

    def int_matmul(self, xq: torch.Tensor, x_scale: torch.Tensor) -> torch.Tensor:
        """Integer activations ``xq [M, K]`` (int8 codes, per-token float32 ``x_scale [M]``) times every
        member's symmetric codes -> float32 ``[M, N_1 + N_2 + ...]``: per column group the exact int32 dot
        products and the epilogue ``(float32(acc) * x_scale[m]) * scale[n, g]``, summed over groups in order
        (one group, per-channel scales: the `int8_gemm` computation), in one `vnni.grouped_int_gemm` launch
        where it runs, else one ``torch._int_mm`` per group and an epilogue launch. Bit-identical to
        :func:`dllm_kernels.reference.gemm.grouped_int_gemm` of each member."""
        return self._int_product(xq.contiguous(), _np(x_scale.to(torch.float32)), _NO_QUANT)

    def quantized_int_matmul(
        self, x: torch.Tensor, bits: int, symmetric: bool = True, clip_ratio: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`quantize_per_token` of ``x [M, K]`` (the same bits), done in the launch that unpacks the first
        tile of weight codes, then `int_matmul`: ``(y float32 [M, N], x_scale float32 [M], x_zero int32 [M]
        or None)``. The caller applies the zero-point correction of asymmetric activations."""
        quant = _token_quant(x, bits, symmetric, clip_ratio)
        codes, scale, zero = _token_quant_result(quant)
        return self._int_product(codes, quant[5], quant), scale, zero

    @functools.cached_property
    def _vnni(self) -> bool:
        """True if the integer GEMMs run as `vnni.grouped_int_gemm` (AVX512-VNNI, one width, 8 or 4 bits,
        groups of a multiple of 64 columns), else per group through ``torch._int_mm``."""
        return vnni.supported(tuple(w.bits for w in self.weights), self._int_group)

    def _int_product(self, xq: torch.Tensor, xs: np.ndarray, quant: _TokenQuant) -> torch.Tensor:
        """The integer GEMM: `vnni.grouped_int_gemm` where it runs (``quant``, if any, first fills ``xq`` and
        ``xs`` in its own launch), else over tiles of at most `TILE_BYTES` codes, ``quant`` done in the first
        tile's unpacking launch."""
        group = self._int_group
        if self._vnni:
            _quantize(quant)
            return torch.from_numpy(
                vnni.grouped_int_gemm(self.packed, self.meta, self._int_scale, _np(xq), xs, group)
            )
        n, k = self.out_features, self.in_features
        out = np.empty((xq.shape[0], n), dtype=np.float32)
        step = _tile_rows(n, k, 1)
        for n0 in range(0, n, step):
            rows = min(step, n - n0)
            tile, weight = _tile_views(rows, k, torch.int8)
            self.unpack_into(tile, n0, quant)
            quant = _NO_QUANT  # quantized with the first tile
            part = out if rows == n else np.empty((xq.shape[0], rows), dtype=np.float32)
            _grouped_int_mm(xq, xs, weight, self._int_scale[n0 : n0 + rows], group, part)
            if part is not out:
                out[:, n0 : n0 + rows] = part
        return torch.from_numpy(out)


def tile_matmul(x: torch.Tensor, tile: torch.Tensor) -> torch.Tensor:
    """``x [M, K] @ tile [R, K]^T`` -> ``[M, R]``, ``x`` and the result in the tile's dtype: bf16 by
    ``F.linear``; float32 as ``tile @ x^T`` and one parallel transposition. On a 2-core machine that GEMM
    gives each thread the tile rows the same thread's share of the dequantization launch wrote; ``x @
    tile^T`` splits the work differently, read half of a freshly written tile from the other core's cache
    and took up to twice as long (docs/benchmarks/cpu.md). oneDNN's bf16 GEMM splits rows as the launch
    does."""
    if tile.dtype == torch.bfloat16:
        return F.linear(x, tile)
    yt = torch.mm(tile, x.t())
    y = torch.empty(x.shape[0], tile.shape[0])
    tiles.transpose(yt.numpy(), tiles.row_chunks(tile.shape[0]), y.numpy())
    return y


def stacked_matmul(
    weights: Sequence[PackedWeight], x: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``x [M, K]`` times several weights of the same K stacked along N, in one GEMM: ``[M, N_1 + N_2 +
    ...]``, column blocks in the order of ``weights``, each block the numbers ``weights[i].matmul(x)`` gives
    (`WeightStack.matmul`). Layers that read the same input (q/k/v, gate/up) share the input conversion
    and one larger GEMM; a caller that runs the same stack repeatedly keeps its `WeightStack` instead."""
    return WeightStack.of(weights).matmul(x, dtype)


def _grouped_int_mm(
    xq: torch.Tensor, xs: np.ndarray, weight: torch.Tensor, scale: np.ndarray, group: int, out: np.ndarray
) -> None:
    """``out [M, N] = sum_g (float32(xq[:, g] @ weight[:, g]^T) * xs[m]) * scale[n, g]``, groups in order: an
    exact ``torch._int_mm`` per column group of int8 codes ``weight [N, K]`` into one int32 ``[G, M, N]``,
    then the float32 epilogue of all groups in one Numba launch."""
    k = weight.shape[1]
    if group == k:
        acc = torch._int_mm(xq, weight.t())[None]
    else:
        acc = torch.empty(k // group, xq.shape[0], weight.shape[0], dtype=torch.int32)
        for g, g0 in enumerate(range(0, k, group)):
            torch._int_mm(xq[:, g0 : g0 + group], weight[:, g0 : g0 + group].t(), out=acc[g])
    tiles.scale_accumulate(acc.numpy(), xs, scale, tiles.row_chunks(len(out)), out)


def stacked_int_matmul(
    weights: Sequence[PackedWeight], xq: torch.Tensor, x_scale: torch.Tensor
) -> torch.Tensor:
    """`PackedWeight.int_matmul` of several symmetric weights with one K and one group size, stacked along
    N: ``[M, N_1 + N_2 + ...]``, column blocks in the order of ``weights``, bit-identical to each weight's
    own `PackedWeight.int_matmul` (`WeightStack.int_matmul`). Layers that read the same input quantize it
    once and share the integer GEMMs."""
    return WeightStack.of(weights).int_matmul(xq, x_scale)


def wna16_gemm(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor | None,
    bits: int,
    group_size: int | None,
) -> torch.Tensor:
    """``x [M, K] @ dequant(W)^T`` -> ``[M, N]``, bfloat16 for bfloat16 ``x``, else float32
    (`PackedWeight.matmul`)."""
    return PackedWeight.from_tensors(w_packed, scale, zero, bits, group_size, x.shape[1]).matmul(x)


def _epilogue(acc: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """``(float32(acc) * x_scale[m]) * w_scale[n]`` in float32, the reference's order."""
    return (acc.to(torch.float32) * x_scale.to(torch.float32)[:, None]) * w_scale.to(torch.float32)[None, :]


def int8_gemm(
    xq: torch.Tensor, x_scale: torch.Tensor, wq: torch.Tensor, w_scale: torch.Tensor
) -> torch.Tensor:
    """W8A8: int8 ``xq [M, K]`` x int8 ``wq [N, K]`` -> float32 ``[M, N]`` (exact int32 accumulation)."""
    return _epilogue(torch._int_mm(xq.contiguous(), wq.contiguous().t()), x_scale, w_scale)


def w4a8_gemm(
    xq: torch.Tensor, x_scale: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor
) -> torch.Tensor:
    """int8 ``xq [M, K]`` x symmetric 4-bit ``w_packed [N, ceil(K/8)]`` -> float32 ``[M, N]``: the
    per-channel case of `PackedWeight.int_matmul` (one column group, ``w_scale [N]``)."""
    weight = PackedWeight.from_tensors(w_packed, w_scale.reshape(-1, 1), None, 4, None, xq.shape[1])
    return weight.int_matmul(xq, x_scale)


w4a4_gemm = w4a8_gemm
"""W4A4 is the W4A8 computation on 4-bit activation codes (the dispatcher checks their range)."""


def quantize_per_token(
    x: torch.Tensor, bits: int, symmetric: bool = True, clip_ratio: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``x [M, K]`` -> ``(codes int8 [M, K], scale float32 [M], zero int32 [M] or None)``, the bits of the
    Numba reference in one fused parallel pass (`tiles.quantize_rows`)."""
    quant = _token_quant(x, bits, symmetric, clip_ratio)
    _quantize(quant)
    return _token_quant_result(quant)


def fake_quantize_per_token(
    xs: Sequence[torch.Tensor], bits: int, symmetric: bool = True, clip_ratio: float = 1.0
) -> tuple[torch.Tensor, ...]:
    """Each ``x [M_i, K_i]`` of ``xs`` -> float32 ``[M_i, K_i]``: `quantize_per_token`'s codes dequantized,
    all in one fused parallel pass (`tiles.fake_quantize_rows`)."""
    xfs = tuple(_np(x.to(torch.float32)) for x in xs)
    outs = tuple(np.empty(xf.shape, dtype=np.float32) for xf in xfs)
    chunks = tiles.row_chunks(max(len(xf) for xf in xfs))
    tiles.fake_quantize_rows(xfs, bits, symmetric, np.float32(clip_ratio), chunks, outs)
    return tuple(torch.from_numpy(out) for out in outs)
