"""AWQ's weight clipping (llm-awq's ``auto_clip``): per (row, input group) clamp bounds searched on outputs.

After AWQ's scales are folded, each searched linear ``W [out, in]`` gets, for every output row ``r`` and
input group ``g`` of the weight spec (the spec's groups of ``G`` columns; the whole row for ``channel``
granularity), the clamp bound ``max_val = p * max|W[r, g]|`` for the shrink ratio ``p`` in
``1, 1 - 1/n_grid, ..., > 1 - max_shrink`` whose quantized group has the least output error

    err(r, g) = e H_gg e^T,   e = Qfake(clamp(W[r, g], -max_val, max_val)) - W[r, g]   ([G]),

with ``H_gg`` the ``[G, G]`` diagonal block of the input's Hessian ``H = X^T X / T`` (``dllm_calib``).
That is ``mean_t (x_t[g] . e)^2``, the mean squared error of the group's partial output on the calibration
tokens, which is llm-awq's objective (it measures the same partial outputs on a sample of 512 of its
tokens; the Hessian here covers every calibration token). Ratio 1 (no clip) is tried first and a smaller
ratio is kept only if it is strictly better, so the chosen objective never exceeds the unclipped one.

The weight is then clamped in place to ``[-max_val, max_val]``: this changes the float model on purpose
(the clamp is part of the quantizer); the actual quantizer (RTN, GPTQ, ...) runs afterwards. ``Qfake`` is
RTN with the target spec (zero point included for asymmetric specs), as in the scale search.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from dllm_kernels import QuantSpec
from torch import Tensor

from dllm_weightquant._checks import check_hessian, check_uniform_spec, check_weight
from dllm_weightquant.rtn import fake_quantize_weight

__all__ = ["AWQClip", "apply_clip", "awq_search_clip", "clip_ratios"]

_ROW_CHUNK = 1024
"""Rows searched at once (bounds the float64 error tensors on large layers)."""


@dataclass(frozen=True, eq=False)
class AWQClip:
    """Result of one clip search on a weight ``[out, in]`` with ``n`` input groups.

    Attributes:
        max_val: float32 ``[out, n]``, the clamp bound per (row, group), in weight units.
        ratio: float32 ``[out, n]``, the chosen shrink ratio (1.0: that group is not clipped).
        error: sum over (row, group) of the chosen ``e H_gg e^T`` (squared output units, mean per token).
        baseline_error: the same sum without clipping (ratio 1 everywhere).
    """

    max_val: Tensor
    ratio: Tensor
    error: float
    baseline_error: float


def clip_ratios(n_grid: int, max_shrink: float) -> list[float]:
    """Shrink ratios tried, largest first: ``1 - k / n_grid`` for ``k < int(max_shrink * n_grid)`` (at least
    ratio 1). llm-awq's defaults (20, 0.5) give 1.0, 0.95, ..., 0.55."""
    return [1.0 - k / n_grid for k in range(max(1, int(max_shrink * n_grid)))]


def _group_size(spec: QuantSpec, in_features: int) -> int:
    """Columns per input group: the spec's group size, or the whole row for ``channel`` granularity."""
    if spec.granularity == "tensor":
        raise ValueError(
            "AWQ clip: granularity 'tensor' shares one scale across rows, so per-row clip bounds are not "
            "separable; use granularity 'group' or 'channel', or set clip: false"
        )
    return int(spec.group_size) if spec.granularity == "group" else in_features


def _diagonal_blocks(hessian: Tensor, group: int) -> Tensor:
    """The ``[n, G, G]`` diagonal blocks ``H_gg`` of ``hessian [n*G, n*G]``."""
    n = hessian.shape[0] // group
    return hessian.reshape(n, group, n, group).diagonal(dim1=0, dim2=2).permute(2, 0, 1)


def _group_errors(weight: Tensor, clamped: Tensor, blocks: Tensor, spec: QuantSpec) -> Tensor:
    """float64 ``[rows, n]``: ``e H_gg e^T`` per (row, group) with ``e = Qfake(clamped) - weight``."""
    n, group = blocks.shape[0], blocks.shape[1]
    e = (fake_quantize_weight(clamped, spec).to(torch.float64) - weight.to(torch.float64)).reshape(
        weight.shape[0], n, group
    )
    return torch.einsum("rni,nij,rnj->rn", e, blocks, e)


def _search_rows(
    weight: Tensor, blocks: Tensor, spec: QuantSpec, ratios: list[float]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Best ratio per (row, group) of float32 ``weight [rows, in]``: ``(ratio, max_val, error, baseline)``,
    each ``[rows, n]`` (ratio/max_val float32, errors float64)."""
    rows, n, group = weight.shape[0], blocks.shape[0], blocks.shape[1]
    cells = weight.reshape(rows, n, group)
    absmax = cells.abs().amax(dim=-1)
    best_ratio = torch.ones_like(absmax)
    baseline = _group_errors(weight, weight, blocks, spec)
    best_err = baseline.clone()
    for ratio in ratios[1:]:
        bound = (absmax * ratio)[..., None]
        clamped = torch.minimum(torch.maximum(cells, -bound), bound).reshape(weight.shape)
        err = _group_errors(weight, clamped, blocks, spec)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_ratio = torch.where(better, torch.full_like(best_ratio, ratio), best_ratio)
    return best_ratio, absmax * best_ratio, best_err, baseline


def awq_search_clip(
    weight: Tensor, hessian: Tensor, spec: QuantSpec, n_grid: int = 20, max_shrink: float = 0.5
) -> AWQClip:
    """Search the clamp bound of every (row, input group) of ``weight [out, in]`` (see the module docstring).

    Args:
        hessian: ``[in, in]`` Hessian ``X^T X / T`` of the linear's input (after any folded AWQ scale).
        spec: the weight format (``group`` or ``channel`` granularity; zero point allowed).
        n_grid: the ratio step is ``1 / n_grid``.
        max_shrink: the smallest ratio tried is above ``1 - max_shrink``.
    """
    w = check_weight(weight).float()
    inp = w.shape[1]
    spec = check_uniform_spec(spec, inp, "AWQ clip")
    blocks = _diagonal_blocks(check_hessian(hessian, inp).to(w.device, torch.float64), _group_size(spec, inp))
    ratios = clip_ratios(n_grid, max_shrink)
    parts = [
        _search_rows(w[i : i + _ROW_CHUNK], blocks, spec, ratios) for i in range(0, w.shape[0], _ROW_CHUNK)
    ]
    ratio, max_val, err, base = (torch.cat(t) for t in zip(*parts, strict=True))
    return AWQClip(
        max_val=max_val.float().cpu(),
        ratio=ratio.float().cpu(),
        error=float(err.sum()),
        baseline_error=float(base.sum()),
    )


def apply_clip(weight: Tensor, clip: AWQClip) -> None:
    """Clamp ``weight [out, in]`` in place to ``[-max_val, max_val]`` per (row, group) of ``clip``."""
    out, inp = weight.shape
    n = clip.max_val.shape[1]
    bound = clip.max_val.to(weight.device, weight.dtype)[..., None]
    cells = weight.detach().reshape(out, n, inp // n)
    with torch.no_grad():
        weight.copy_(torch.minimum(torch.maximum(cells, -bound), bound).reshape(out, inp))
