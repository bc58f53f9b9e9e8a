"""GGUF block grids (llama.cpp's Q8_0, Q4_0, Q4_K) in torch: spec, scales, codes, values and block bytes.

A weight ``[out, in]`` is quantized along its rows (ggml's contiguous dimension ``ne0 = in``) in blocks of
32 values. All arithmetic is float32 and follows llama.cpp's reference quantizers (``ggml-quants.c``) so
that the bytes equal what llama.cpp would store for the same parameters:

* **Q8_0** (34 bytes per block): ``d = amax / 127`` (float32), stored as fp16; codes
  ``roundf(x * (1 / d))`` (round half away from zero) in ``[-127, 127]``; value ``float32(fp16 d) * code``.
* **Q4_0** (18 bytes per block): ``d = m / -8`` where ``m`` is the element of largest magnitude (first on
  ties, sign kept), stored as fp16; codes ``min(15, trunc(x * (1 / d) + 8.5))`` in ``[0, 15]``, value
  ``float32(fp16 d) * (code - 8)``. Signed codes here are ``code - 8`` in ``[-8, 7]``.
* **Q4_K** (144 bytes per super-block of 256 = 8 sub-blocks of 32): a sub-block ``j`` has a float scale
  ``s_j = (max(x, 0) - min(x, 0)) / 15`` and minimum ``n_j = -min(x, 0) >= 0``; the super-block stores fp16
  ``d = max_j s_j / 63`` and ``dmin = max_j n_j / 63`` and 6-bit ``sc_j = min(63, rint(s_j * 63 / max s))``,
  ``m_j = min(63, rint(n_j * 63 / max n))``. The effective sub-block scale and minimum are
  ``D_j = float32(d) * sc_j`` and ``M_j = float32(dmin) * m_j``; codes ``clamp(rint((x + M_j) / D_j), 0, 15)``
  (0 where ``D_j = 0``) and the value is ``D_j * code - M_j``. rint rounds half to even (llama.cpp's
  ``nearest_int``). llama.cpp searches ``s_j, n_j`` iteratively (``make_qkx2_quants``); this module takes
  the min/max ones: any parameters are valid Q4_K, only the bytes' meaning is fixed.

The scale rounding of the format (fp16 ``d``; Q4_K's 6-bit ``sc``/``m``) is part of every function here, so
a quantizer that uses them (RTN, GPTQ's column sweep, AWQ's proxy) optimizes the values that are exported.
Q4_K splits its parameters in two: the super-block's ``d``/``dmin`` scale factors (:func:`q4k_super`) and
the 6-bit sub-block codes relative to them (:func:`q4k_sub`), so GPTQ can fix the first before its sweep
and compute the second from the error-updated weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dllm_kernels.spec import QuantSpec

__all__ = [
    "BLOCK",
    "GGUF_TYPES",
    "SUPER_BLOCK",
    "GGUFShapeError",
    "GGUFSpec",
    "block_bytes",
    "check_row",
    "decode",
    "encode",
    "fallback_type",
    "pack_rows",
    "q4k_sub",
    "q4k_super",
    "scale_of",
    "unpack_rows",
]

GGUF_TYPES = ("Q8_0", "Q4_0", "Q4_K")
BLOCK = 32
SUPER_BLOCK = 256
_ROW_MULTIPLE = {"Q8_0": BLOCK, "Q4_0": BLOCK, "Q4_K": SUPER_BLOCK}
_TYPE_BYTES = {"Q8_0": 34, "Q4_0": 18, "Q4_K": 144}
_CANONICAL = {"Q8_0": (8, True), "Q4_0": (4, True), "Q4_K": (4, False)}


class GGUFShapeError(ValueError):
    """A row length the GGUF type cannot hold (not a multiple of its block)."""


@dataclass(frozen=True)
class GGUFSpec(QuantSpec):
    """A ``QuantSpec`` on a GGUF grid: ``bits``/``symmetric`` as the type's codes, groups of 32 columns.

    Build it with :meth:`of`; ``gguf_type`` is ``"Q8_0"``, ``"Q4_0"`` or ``"Q4_K"``. Code that only knows
    ``QuantSpec`` sees a group-32 integer format; the GGUF quantizers take its scale rules from here.
    """

    gguf_type: str = "Q4_0"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gguf_type not in GGUF_TYPES:
            raise ValueError(f"GGUFSpec.gguf_type must be one of {GGUF_TYPES}, got {self.gguf_type!r}")
        bits, symmetric = _CANONICAL[self.gguf_type]
        if (self.bits, self.symmetric, self.granularity, self.group_size, self.type) != (
            bits,
            symmetric,
            "group",
            BLOCK,
            "int",
        ):
            raise ValueError(
                f"GGUFSpec {self.gguf_type} is bits={bits}, symmetric={symmetric}, group_size={BLOCK}; "
                f"build it with GGUFSpec.of({self.gguf_type!r})"
            )

    @classmethod
    def of(cls, gguf_type: str) -> GGUFSpec:
        """The spec of a GGUF type name (case-insensitive: ``"q4_k"`` works)."""
        name = str(gguf_type).upper()
        if name not in GGUF_TYPES:
            raise ValueError(f"unknown GGUF type {gguf_type!r}; supported: {', '.join(GGUF_TYPES)}")
        bits, symmetric = _CANONICAL[name]
        return cls(bits=bits, symmetric=symmetric, granularity="group", group_size=BLOCK, gguf_type=name)

    @property
    def row_multiple(self) -> int:
        """Row lengths must be a multiple of this (32, or 256 for Q4_K)."""
        return _ROW_MULTIPLE[self.gguf_type]


def block_bytes(gguf_type: str) -> tuple[int, int]:
    """``(values per block, bytes per block)`` of a type."""
    return _ROW_MULTIPLE[gguf_type], _TYPE_BYTES[gguf_type]


def fallback_type(gguf_type: str, row_length: int) -> str:
    """The type a row of ``row_length`` values is stored in: ``gguf_type`` when it fits; Q4_K falls back to
    Q8_0 when the row is a multiple of 32 only; otherwise ``"F16"`` (unquantized)."""
    if row_length % _ROW_MULTIPLE[gguf_type] == 0:
        return gguf_type
    return "Q8_0" if row_length % BLOCK == 0 else "F16"


def check_row(gguf_type: str, row_length: int, name: str) -> None:
    """Raise `GGUFShapeError` naming ``name`` and the fallback when ``row_length`` does not fit the type."""
    multiple = _ROW_MULTIPLE[gguf_type]
    if row_length % multiple:
        raise GGUFShapeError(
            f"{name}: row length {row_length} is not a multiple of {multiple}, which {gguf_type} needs; "
            f"the GGUF export stores it as {fallback_type(gguf_type, row_length)} instead"
        )


def _div(t: Tensor, value: float) -> Tensor:
    """IEEE float32 quotient on every device (CUDA turns ``t / scalar`` into a reciprocal multiply)."""
    return t / torch.full_like(t, value)


def _inverse(d: Tensor) -> Tensor:
    """``1 / d`` and 0 where ``d == 0`` (float32)."""
    zero = d == 0
    return torch.where(zero, torch.zeros_like(d), 1.0 / d.masked_fill(zero, 1.0))


def scale_of(blocks: Tensor, gguf_type: str) -> Tensor:
    """float32 block scale ``d`` (before fp16 rounding) of ``blocks [..., 32]`` for Q8_0 / Q4_0."""
    x = blocks.float()
    if gguf_type == "Q8_0":
        return _div(x.abs().amax(dim=-1), 127.0)
    if gguf_type == "Q4_0":
        peak = x.gather(-1, x.abs().argmax(dim=-1, keepdim=True)).squeeze(-1)
        return _div(peak, -8.0)
    raise ValueError(f"scale_of covers Q8_0 and Q4_0, got {gguf_type!r} (Q4_K: q4k_super, q4k_sub)")


def _roundf(v: Tensor) -> Tensor:
    """C ``roundf``: to nearest, halves away from zero (exact for every float32)."""
    a = v.abs()
    low = torch.floor(a)
    return torch.sign(v) * torch.where(a - low >= 0.5, low + 1.0, low)


def encode(x: Tensor, gguf_type: str, d: Tensor, offset: Tensor | None = None) -> Tensor:
    """int8 codes of ``x`` (broadcasting against the parameters).

    Q8_0 / Q4_0: ``d`` is the float32 scale of :func:`scale_of` (codes use ``1 / d`` as llama.cpp does); the
    codes are signed (Q4_0: ``[-8, 7]``). Q4_K: ``d`` and ``offset`` are the effective ``D_j`` and ``M_j``
    of :func:`q4k_sub`; the codes are unsigned ``[0, 15]``.
    """
    x = x.float()
    if gguf_type == "Q8_0":
        return _roundf(x * _inverse(d)).clamp(-127, 127).to(torch.int8)
    if gguf_type == "Q4_0":
        return (torch.trunc(x * _inverse(d) + 8.5).clamp(0, 15) - 8).to(torch.int8)
    if offset is None:
        raise ValueError("Q4_K codes need the sub-block minimum (offset)")
    q = torch.round((x + offset) / d.masked_fill(d == 0, 1.0)).clamp(0, 15)
    return torch.where(d == 0, torch.zeros_like(q), q).to(torch.int8)


def decode(codes: Tensor, gguf_type: str, d: Tensor, offset: Tensor | None = None) -> Tensor:
    """float32 values of ``codes`` (as :func:`encode` returns them), exactly as gguf's dequantization.

    Q8_0 / Q4_0: ``d`` is the float32 scale; it is rounded to fp16 here (the stored scale). Q4_K: ``d`` and
    ``offset`` are ``D_j`` and ``M_j`` (already built from the stored fp16 and 6-bit values).
    """
    if gguf_type == "Q4_K":
        if offset is None:
            raise ValueError("Q4_K values need the sub-block minimum (offset)")
        return d * codes.float() - offset
    return d.half().float() * codes.float()


def q4k_super(superblocks: Tensor) -> tuple[Tensor, Tensor]:
    """float32 ``(max_j s_j, max_j n_j)`` ``[...]`` of ``superblocks [..., 256]`` (the min/max sub-block
    scales and minimums; ``d = first / 63`` and ``dmin = second / 63``)."""
    s, n = _sub_minmax(superblocks.float().reshape(*superblocks.shape[:-1], 8, BLOCK))
    return s.amax(dim=-1), n.amax(dim=-1)


def _sub_minmax(sub: Tensor) -> tuple[Tensor, Tensor]:
    """float32 ``(s_j, n_j)`` ``[...]`` of sub-blocks ``[..., 32]``."""
    lo = torch.clamp(sub.amin(dim=-1), max=0.0)
    hi = torch.clamp(sub.amax(dim=-1), min=0.0)
    return _div(hi - lo, 15.0), -lo


def q4k_sub(sub: Tensor, max_scale: Tensor, max_min: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """6-bit parameters of sub-blocks ``sub [..., 32]`` of super-blocks with ``max_scale``, ``max_min`` [...].

    Returns ``(sc uint8, m uint8, D float32, M float32)``, each ``[...]``: the 6-bit codes and the
    effective scale ``float32(fp16(max_scale / 63)) * sc`` and minimum ``float32(fp16(max_min / 63)) * m``.
    """
    s, n = _sub_minmax(sub.float())
    sc = torch.round(_per63(max_scale) * s).clamp(0, 63)
    m = torch.round(_per63(max_min) * n).clamp(0, 63)
    d = _div(max_scale, 63.0).half().float()
    dmin = _div(max_min, 63.0).half().float()
    return sc.to(torch.uint8), m.to(torch.uint8), d * sc, dmin * m


def _per63(peak: Tensor) -> Tensor:
    """llama.cpp's ``inv = peak > 0 ? 63 / peak : 0`` (float32)."""
    peak = peak.float()
    positive = peak > 0
    return torch.where(positive, torch.full_like(peak, 63.0) / peak.masked_fill(~positive, 1.0), 0.0)


def _fp16_bytes(values: Tensor) -> Tensor:
    """uint8 ``[..., 2]``: the little-endian fp16 bytes of float ``values [...]``."""
    return values.half().contiguous().unsqueeze(-1).view(torch.uint8)


def pack_rows(
    gguf_type: str,
    codes: Tensor,
    d: Tensor,
    sc: Tensor | None = None,
    m: Tensor | None = None,
    dmin: Tensor | None = None,
) -> Tensor:
    """GGUF block bytes uint8 ``[out, in / values_per_block * bytes_per_block]`` of one tensor.

    Args:
        codes: int8 ``[out, in]`` as :func:`encode` returns them.
        d: float32 per block: Q8_0 / Q4_0 the scale ``[out, in/32]`` (rounded to fp16 here); Q4_K the
            super-block ``max_scale`` ``[out, in/256]`` of :func:`q4k_super` (``d = max_scale / 63``).
        sc, m: Q4_K only, uint8 ``[out, in/32]`` 6-bit sub-block scales and minimums.
        dmin: Q4_K only, float32 ``[out, in/256]``: the ``max_min`` of :func:`q4k_super`.
    """
    out, inp = codes.shape
    if gguf_type == "Q8_0":
        body = codes.reshape(out, inp // BLOCK, BLOCK).view(torch.uint8)
        return torch.cat([_fp16_bytes(d), body], dim=-1).reshape(out, -1)
    if gguf_type == "Q4_0":
        q = (codes.to(torch.int16) + 8).to(torch.uint8).reshape(out, inp // BLOCK, 2, BLOCK // 2)
        return torch.cat([_fp16_bytes(d), q[..., 0, :] | (q[..., 1, :] << 4)], dim=-1).reshape(out, -1)
    if sc is None or m is None or dmin is None:
        raise ValueError("Q4_K bytes need sc, m and dmin")
    n = inp // SUPER_BLOCK
    sc = sc.reshape(out, n, 8)
    m = m.reshape(out, n, 8)
    scales = torch.cat(
        [
            sc[..., :4] | ((sc[..., 4:] >> 4) << 6),
            m[..., :4] | ((m[..., 4:] >> 4) << 6),
            (sc[..., 4:] & 0x0F) | ((m[..., 4:] & 0x0F) << 4),
        ],
        dim=-1,
    )
    q = codes.to(torch.uint8).reshape(out, n, 4, 2, BLOCK)
    qs = (q[..., 0, :] | (q[..., 1, :] << 4)).reshape(out, n, 128)
    head = [_fp16_bytes(_div(d.float(), 63.0)), _fp16_bytes(_div(dmin.float(), 63.0))]
    return torch.cat([*head, scales, qs], dim=-1).reshape(out, -1)


def unpack_rows(gguf_type: str, data: Tensor, in_features: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """Inverse of :func:`pack_rows` into decodable parameters: ``(codes int8 [out, in], D, M)``.

    ``D`` float32 ``[out, in/32, 1]`` is the per-block scale for :func:`decode` (Q8_0 / Q4_0: the stored
    fp16 scale as float32; Q4_K: ``float32(d) * sc``), ``M`` the Q4_K minimum ``float32(dmin) * m`` (else
    None); :func:`decode` of ``codes`` viewed as ``[out, in/32, 32]`` gives the tensor's values.
    """
    per, size = block_bytes(gguf_type)
    out = data.shape[0]
    blocks = data.reshape(out, in_features // per, size)
    if gguf_type in ("Q8_0", "Q4_0"):
        d = blocks[..., :2].contiguous().view(torch.float16).float()
        if gguf_type == "Q8_0":
            codes = blocks[..., 2:].contiguous().view(torch.int8)
        else:
            qs = blocks[..., 2:]
            codes = (torch.cat([qs & 0x0F, qs >> 4], dim=-1).to(torch.int16) - 8).to(torch.int8)
        return codes.reshape(out, in_features), d, None
    d = blocks[..., 0:2].contiguous().view(torch.float16).float()
    dmin = blocks[..., 2:4].contiguous().view(torch.float16).float()
    s = blocks[..., 4:16]
    sc = torch.cat([s[..., 0:4] & 0x3F, (s[..., 8:12] & 0x0F) | ((s[..., 0:4] >> 2) & 0x30)], dim=-1)
    m = torch.cat([s[..., 4:8] & 0x3F, (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 2) & 0x30)], dim=-1)
    qs = blocks[..., 16:].reshape(out, -1, 4, 1, BLOCK)
    codes = torch.cat([qs & 0x0F, qs >> 4], dim=-2).to(torch.int8).reshape(out, in_features)
    scale = (d * sc.float()).reshape(out, -1, 1)
    minimum = (dmin * m.float()).reshape(out, -1, 1)
    return codes, scale, minimum
