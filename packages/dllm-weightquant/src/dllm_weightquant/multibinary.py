"""``MultiBinaryWeight``: Quant-dLLM's multi-binary row/column weight (DAQ and ABMP).

The input dim is split into groups of ``group_size`` columns; group ``g`` of order ``K_g`` is

    W[:, g] ~= sum_{k < K_g} (alpha_r[p] alpha_c[p]^T) * B[p],   p = offset_g + k,  B[p] in {-1, +1}^{out x G}

(``offset_g = sum_{h < g} K_h``), so a weight is ``P = sum_g K_g`` binary planes plus one row and one column
scale vector per plane. ``K_g`` is the group's bit width (DAQ: the same for every group; ABMP: 1/2/3).
Signs are stored as bits (see ``FORMAT.md``): plane ``p``, row ``o``, column ``j`` of the group is bit
``j % 32`` of int32 word ``j // 32`` of ``planes[p, o]``, 1 meaning +1 and 0 meaning -1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MultiBinaryWeight", "combine_planes", "pack_signs", "unpack_signs"]

_SHIFTS = torch.arange(32, dtype=torch.int64)


def pack_signs(positive: Tensor) -> Tensor:
    """bool ``[..., n]`` (True = +1) -> int32 ``[..., ceil(n / 32)]``; element j is bit ``j % 32`` of word
    ``j // 32``."""
    n = positive.shape[-1]
    words = (n + 31) // 32
    bits = torch.zeros(*positive.shape[:-1], words * 32, dtype=torch.int64, device=positive.device)
    bits[..., :n] = positive.to(torch.int64)
    packed = (bits.reshape(*positive.shape[:-1], words, 32) << _SHIFTS.to(positive.device)).sum(dim=-1)
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)
    return packed.to(torch.int32)


def unpack_signs(packed: Tensor, n: int) -> Tensor:
    """Inverse of :func:`pack_signs`: int32 ``[..., words]`` -> bool ``[..., n]``."""
    words = packed.to(torch.int64) & 0xFFFFFFFF
    bits = (words[..., None] >> _SHIFTS.to(packed.device)) & 1
    return bits.reshape(*packed.shape[:-1], -1)[..., :n].bool()


def combine_planes(positive: Tensor, alpha_r: Tensor, alpha_c: Tensor) -> Tensor:
    """float32 ``[out, G]`` = ``sum_k (alpha_r[k] alpha_c[k]^T) * (+1 if positive[k] else -1)``.

    ``positive`` bool ``[K, out, G]``, ``alpha_r [K, out]``, ``alpha_c [K, G]`` (cast to float32); the planes
    are added in order k = 0, 1, ..., so the quantizers and ``dequantize`` get identical floats.
    """
    signs = positive.float() * 2.0 - 1.0
    terms = alpha_r.float()[:, :, None] * alpha_c.float()[:, None, :] * signs
    out = terms[0]
    for k in range(1, terms.shape[0]):
        out = out + terms[k]
    return out


@dataclass(frozen=True, eq=False)
class MultiBinaryWeight:
    """A multi-binary ``[out, in]`` weight (CPU tensors).

    Attributes:
        planes: int32 ``[P, out, ceil(G / 32)]`` sign bits.
        alpha_r: float32 ``[P, out]`` row scales.
        alpha_c: float32 ``[P, G]`` column scales.
        orders: int32 ``[in / G]`` planes per group (``sum = P``), each >= 1.
        shape: ``(out, in)``.
        group_size: ``G`` columns per group.
    """

    planes: Tensor
    alpha_r: Tensor
    alpha_c: Tensor
    orders: Tensor
    shape: tuple[int, int]
    group_size: int

    def __post_init__(self) -> None:
        out, inp = self.shape
        g = self.group_size
        if g <= 0 or inp % g:
            raise ValueError(f"group_size {g} must divide the input width {inp}")
        if (
            self.orders.dtype != torch.int32
            or tuple(self.orders.shape) != (inp // g,)
            or int(self.orders.min()) < 1
        ):
            raise ValueError(f"orders must be int32 [{inp // g}] with every entry >= 1, got {self.orders}")
        p = int(self.orders.sum())
        checks = (
            ("planes", self.planes, torch.int32, (p, out, (g + 31) // 32)),
            ("alpha_r", self.alpha_r, torch.float32, (p, out)),
            ("alpha_c", self.alpha_c, torch.float32, (p, g)),
        )
        for name, t, dtype, shape in checks:
            if t.dtype != dtype or tuple(t.shape) != shape:
                raise ValueError(f"{name} must be {dtype} {list(shape)}, got {t.dtype} {list(t.shape)}")

    @classmethod
    def from_planes(
        cls,
        signs: list[Tensor],
        alpha_r: list[Tensor],
        alpha_c: list[Tensor],
        shape: tuple[int, int],
        group_size: int,
    ) -> MultiBinaryWeight:
        """Build from per-group lists: ``signs[g]`` bool ``[K_g, out, G]``, ``alpha_r[g]`` ``[K_g, out]``,
        ``alpha_c[g]`` ``[K_g, G]``."""
        return cls(
            planes=pack_signs(torch.cat(signs).cpu()),
            alpha_r=torch.cat(alpha_r).detach().cpu().float().contiguous(),
            alpha_c=torch.cat(alpha_c).detach().cpu().float().contiguous(),
            orders=torch.tensor([s.shape[0] for s in signs], dtype=torch.int32),
            shape=(int(shape[0]), int(shape[1])),
            group_size=int(group_size),
        )

    @property
    def out_features(self) -> int:
        return self.shape[0]

    @property
    def in_features(self) -> int:
        return self.shape[1]

    @property
    def bits_per_weight(self) -> float:
        """Mean planes (= bits) per weight, scales not counted: ``sum(orders) / n_groups``."""
        return float(self.orders.sum()) / self.orders.shape[0]

    def group_dequantize(self, first_plane: int, order: int) -> Tensor:
        """float32 ``[out, G]`` of one group from its planes ``first_plane .. first_plane + order - 1``."""
        sl = slice(first_plane, first_plane + order)
        return combine_planes(
            unpack_signs(self.planes[sl], self.group_size), self.alpha_r[sl], self.alpha_c[sl]
        )

    def dequantize(self) -> Tensor:
        """float32 ``[out, in]``."""
        parts, first = [], 0
        for order in self.orders.tolist():
            parts.append(self.group_dequantize(first, order))
            first += order
        return torch.cat(parts, dim=1)
