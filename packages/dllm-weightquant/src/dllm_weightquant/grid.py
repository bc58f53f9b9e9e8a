"""MSE clip search on the integer grid of ``dllm_kernels`` (GPTQ's "MSE observer", RTN and AWQ's proxy).

The grid itself is ``dllm_kernels.torch_grid`` (the torch implementation that equals ``dllm_kernels.quantize``
bit for bit): per cell (a row's group of columns) the range ``[min(min(w), 0), max(max(w), 0)]`` gives a
float32 scale and, for asymmetric grids, a signed int32 zero point; codes are signed until they are stored
(``torch_grid.to_unsigned`` gives the weight storage of asymmetric grids). GPTQ encodes one column at a time
with a group's parameters and the clip search needs parameters from shrunk ranges, on any device, which is
why the graph-side quantizers use the torch grid instead of the dispatched ``dllm_kernels.quantize``.

``ClipSearch``: for each cell try the shrunk ranges ``[p*lo, p*hi]`` for ``p = 1, 1 - 1/grid, ...`` down to
``1 - max_shrink`` (exclusive) and keep the one with the smallest ``sum |dequant(w) - w|^norm`` over the cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from dllm_calib import MethodConfig, check_positive_int, check_range
from dllm_kernels import torch_grid
from dllm_kernels.cpu.clip_search import clip_search
from torch import Tensor

__all__ = ["ClipSearch", "search_params"]


@dataclass(frozen=True)
class ClipSearch(MethodConfig):
    """MSE clip search over shrink ratios of each cell's range.

    Attributes:
        grid: ratio step is 1/grid.
        max_shrink: the smallest ratio tried is above ``1 - max_shrink`` (0.8 -> down to 0.21 with grid 100).
        norm: the error exponent (2.0 = squared error; GPTQ's reference uses 2.4).
    """

    grid: int = 100
    max_shrink: float = 0.8
    norm: float = 2.0

    def validate(self) -> None:
        check_positive_int("ClipSearch", "grid", self.grid)
        check_range("ClipSearch", "max_shrink", self.max_shrink, 0.0, 1.0, hi_open=True)
        check_range("ClipSearch", "norm", self.norm, 0.0, 16.0, lo_open=True)

    def ratios(self) -> list[float]:
        """Shrink ratios tried, largest first (always starts with 1.0)."""
        return [1.0 - k / self.grid for k in range(max(1, int(self.max_shrink * self.grid)))]


_CHUNK = 1 << 17
"""Elements per chunk of the clip search (512 KiB of float32): a chunk stays in cache across all ratios."""


def search_params(
    cells: Tensor, bits: int, symmetric: bool, clip: ClipSearch | None
) -> tuple[Tensor, Tensor | None]:
    """Grid parameters for each cell of ``cells [..., n]`` (the last dim is one cell's values).

    Returns scale float32 ``[...]`` and the signed int32 zero ``[...]`` (None if symmetric): min/max
    parameters when ``clip`` is None, else the clip search's best per cell (the first of equal errors).
    On CPU the search is one Numba kernel (`dllm_kernels.cpu.clip_search`: every ratio on one cell while it
    is in cache); elsewhere it runs over chunks of whole cells, every ratio on one chunk before the next.
    """
    if clip is not None and cells.device.type == "cpu" and cells.numel():
        n = cells.shape[-1]
        scale, zero = clip_search(cells.reshape(-1, n), bits, symmetric, clip.ratios(), clip.norm)
        shape = cells.shape[:-1]
        return scale.reshape(shape), None if zero is None else zero.reshape(shape)
    lo, hi = torch.aminmax(cells.float(), dim=-1)
    if clip is None:
        return torch_grid.scale_zero(lo, hi, bits, symmetric)
    n = cells.shape[-1]
    x = cells.float().reshape(-1, n)
    lo, hi = lo.reshape(-1), hi.reshape(-1)
    scale = torch.empty_like(lo)
    zero = None if symmetric else torch.empty(lo.shape, dtype=torch.int32, device=lo.device)
    rows = max(1, _CHUNK // n)
    for r0 in range(0, x.shape[0], rows):
        part = slice(r0, r0 + rows)
        s, z = _search_chunk(x[part], lo[part], hi[part], bits, symmetric, clip)
        scale[part] = s
        if zero is not None and z is not None:
            zero[part] = z
    shape = cells.shape[:-1]
    return scale.reshape(shape), None if zero is None else zero.reshape(shape)


def _search_chunk(
    x: Tensor, lo: Tensor, hi: Tensor, bits: int, symmetric: bool, clip: ClipSearch
) -> tuple[Tensor, Tensor | None]:
    """The clip search on cells ``x [c, n]`` float32 with ranges ``lo, hi [c]``: the best scale and zero
    ``[c]``."""
    buf = torch.empty_like(x)
    best_scale, best_zero = torch_grid.scale_zero(lo, hi, bits, symmetric)
    best_err = _cell_error(buf, x, best_scale, best_zero, bits, clip.norm)
    for p in clip.ratios()[1:]:
        scale, zero = torch_grid.scale_zero(lo, hi, bits, symmetric, p)
        err = _cell_error(buf, x, scale, zero, bits, clip.norm)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        if zero is not None and best_zero is not None:
            best_zero = torch.where(better, zero, best_zero)
    return best_scale, best_zero


def _cell_error(buf: Tensor, x: Tensor, scale: Tensor, zero: Tensor | None, bits: int, norm: float) -> Tensor:
    """``sum |dequant(x) - x|^norm`` over the last dim of ``x [c, n]`` float32 for per-cell ``scale`` /
    ``zero [c]``, computed in ``buf [c, n]``: the values of ``torch_grid.decode(torch_grid.encode(...))``
    (the codes and zero points are small integers, exact in float32)."""
    half = 1 << (bits - 1)
    s = scale[:, None]
    torch.div(x, s, out=buf)
    zf = None if zero is None else zero[:, None].float()
    if zf is not None:
        buf.add_(zf)
    buf.clamp_(-half, half - 1).round_()
    if zf is not None:
        buf.sub_(zf)
    return buf.mul_(s).sub_(x).abs_().pow_(norm).sum(-1)
