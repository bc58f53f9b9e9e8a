"""Quantizers on GGUF grids: round-to-nearest (`gguf_rtn`) and the block parameters of GPTQ's sweep.

Both use ``dllm_kernels.gguf_grid``, which rounds the scales as the format stores them (fp16 ``d``; Q4_K's
6-bit sub-block scales and minimums against fp16 ``d``/``dmin``), so the quantizers optimize the values that
are exported. `GGUFGroupParams` has the interface GPTQ's sweep calls (``fill``, ``encode``, ``decode``):

* Q8_0 / Q4_0: a 32-column block's scale is computed when the sweep reaches its first column, from the
  block's current (error-updated) weights, like GPTQ's lazy group scales;
* Q4_K: the super-block factors ``d``/``dmin`` are static, from the weights before the sweep; each
  sub-block's 6-bit scale and minimum relative to them are computed lazily from the current weights
  (clamped at 63 when the updates widened the sub-block's range).
"""

from __future__ import annotations

import warnings

import torch
from dllm_kernels import GGUFSpec, gguf_grid
from torch import Tensor

from dllm_weightquant.gguf.weight import GGUFWeight

__all__ = ["GGUFGroupParams", "gguf_rtn", "gguf_spec_for"]

B = gguf_grid.BLOCK


def gguf_rtn(weight: Tensor, spec: GGUFSpec, name: str = "weight") -> GGUFWeight:
    """Round ``weight [out, in]`` to the GGUF grid of ``spec`` with llama.cpp's scale rules (CPU result).

    For Q8_0 and Q4_0 the codes are those of llama.cpp's reference quantizer (and of ``gguf.quants``).
    Raises ``dllm_kernels.gguf_grid.GGUFShapeError`` (naming ``name`` and the export's fallback) when the
    row length is not a multiple of the type's block.
    """
    w = weight.detach().float()
    out, inp = w.shape
    gguf_type = spec.gguf_type
    gguf_grid.check_row(gguf_type, inp, name)
    if gguf_type != "Q4_K":
        blocks = w.reshape(out, inp // B, B)
        d = gguf_grid.scale_of(blocks, gguf_type)
        codes = gguf_grid.encode(blocks, gguf_type, d[..., None]).reshape(out, inp)
        data = gguf_grid.pack_rows(gguf_type, codes, d)
    else:
        n = inp // gguf_grid.SUPER_BLOCK
        max_scale, max_min = gguf_grid.q4k_super(w.reshape(out, n, gguf_grid.SUPER_BLOCK))
        sub = w.reshape(out, n, 8, B)
        sc, m, scale, minimum = gguf_grid.q4k_sub(sub, max_scale[..., None], max_min[..., None])
        codes = gguf_grid.encode(sub, gguf_type, scale[..., None], minimum[..., None]).reshape(out, inp)
        data = gguf_grid.pack_rows(
            gguf_type, codes, max_scale, sc.reshape(out, -1), m.reshape(out, -1), max_min
        )
    return GGUFWeight(data.cpu().contiguous(), gguf_type, (out, inp))


class GGUFGroupParams:
    """Parameters of every 32-column block for GPTQ's sweep, filled lazily (see the module docstring).

    ``position_group[j]`` is the block of processed column ``j`` and ``members[g]`` the processed positions of
    block ``g`` (act-order permutes columns, never blocks).
    """

    def __init__(self, spec: GGUFSpec, weight: Tensor, perm: Tensor, device: torch.device) -> None:
        """``weight [out, in]`` in the original column order (the static Q4_K factors come from it);
        ``perm`` int64 ``[in]`` on the CPU: processed position -> original column."""
        out, inp = weight.shape
        gguf_grid.check_row(spec.gguf_type, inp, "weight")
        self.gguf_type = spec.gguf_type
        count = inp // B
        self.position_group: list[int] = (perm // B).tolist()
        inv = torch.argsort(perm)
        self.members = [torch.sort(inv[g * B : (g + 1) * B]).values.to(device) for g in range(count)]
        self.done = [False] * count
        self.scale = torch.zeros(out, count, dtype=torch.float32, device=device)
        self.minimum: Tensor | None = None
        if self.gguf_type == "Q4_K":
            n = inp // gguf_grid.SUPER_BLOCK
            self.max_scale, self.max_min = gguf_grid.q4k_super(
                weight.float().reshape(out, n, gguf_grid.SUPER_BLOCK)
            )
            self.minimum = torch.zeros_like(self.scale)
            self.sc = torch.zeros(out, count, dtype=torch.uint8, device=device)
            self.m = torch.zeros_like(self.sc)

    def fill(self, g: int, current: Tensor) -> None:
        """Set block ``g`` from its current weights ``[out, 32]``."""
        if self.minimum is None:
            self.scale[:, g] = gguf_grid.scale_of(current, self.gguf_type)
        else:
            j = g // 8
            sc, m, scale, minimum = gguf_grid.q4k_sub(current, self.max_scale[:, j], self.max_min[:, j])
            self.sc[:, g], self.m[:, g], self.scale[:, g], self.minimum[:, g] = sc, m, scale, minimum
        self.done[g] = True

    def _params(self, g: int) -> tuple[Tensor, Tensor | None]:
        return self.scale[:, g], None if self.minimum is None else self.minimum[:, g]

    def encode(self, g: int, column: Tensor) -> Tensor:
        """int8 codes ``[out]`` of one column of block ``g``."""
        return gguf_grid.encode(column, self.gguf_type, *self._params(g))

    def decode(self, g: int, codes: Tensor) -> Tensor:
        """float32 values ``[out]`` of one column's codes in block ``g`` (exactly the exported values)."""
        return gguf_grid.decode(codes, self.gguf_type, *self._params(g))

    def weight(self, codes: Tensor) -> GGUFWeight:
        """The `GGUFWeight` of the sweep's codes ``[out, in]`` (original column order)."""
        out, inp = codes.shape
        if self.minimum is None:
            data = gguf_grid.pack_rows(self.gguf_type, codes, self.scale)
        else:
            data = gguf_grid.pack_rows(self.gguf_type, codes, self.max_scale, self.sc, self.m, self.max_min)
        return GGUFWeight(data.cpu().contiguous(), self.gguf_type, (out, inp))


def gguf_spec_for(spec: GGUFSpec, in_features: int) -> GGUFSpec:
    """``spec``, or its fallback for rows of ``in_features`` values (Q4_K -> Q8_0 when the row is a multiple
    of 32 but not of 256, with a warning). Raises ``GGUFShapeError`` when no GGUF grid holds the row."""
    target = gguf_grid.fallback_type(spec.gguf_type, in_features)
    if target == spec.gguf_type:
        return spec
    if target == "F16":
        gguf_grid.check_row(
            spec.gguf_type, in_features, f"a weight with {in_features} inputs (add it to the recipe's ignore)"
        )
    warnings.warn(
        f"{spec.gguf_type}: a weight with {in_features} inputs is not a multiple of {spec.row_multiple}; "
        f"quantized as {target} instead (llama.cpp's fallback)",
        RuntimeWarning,
        stacklevel=3,
    )
    return GGUFSpec.of(target)
