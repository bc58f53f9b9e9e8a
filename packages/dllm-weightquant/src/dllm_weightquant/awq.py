"""AWQ: activation-aware per-input-channel scales, folded into the model through the topology.

For a group of linears reading the same input ``x`` (``W = [W_1; W_2; ...]``), AWQ picks a per-channel
scale ``s`` and rewrites ``W x = (W diag(s)) (x / s)``: the ``1/s`` goes into the producer of ``x`` (an
RMSNorm gain, v_proj's rows, or up_proj's rows) and ``diag(s)`` into the linears' columns, so the float
model is unchanged while salient input channels get finer quantization. Candidates (Lin et al., 2024):

* ``s = mean|x|^alpha``, or with ``duo_scaling`` ``s = mean|x|^alpha / wbar^(1 - alpha)`` where ``wbar`` is
  the mean over rows of ``|W|`` normalised by each group's absmax (as llm-awq / llm-compressor);
* ``alpha`` on the grid ``0, 1/n_grid, ..., (n_grid - 1)/n_grid``; ``s`` is clamped to >= 1e-4 and
  normalised by ``sqrt(max(s) * min(s))``.

Each candidate is scored by the output error of the quantized group on the calibration activations,
``sum_i tr(E_i H E_i^T)`` with ``E_i = Qfake(W_i diag(s)) diag(1/s) - W_i`` and ``H`` the Hessian of the
group's input (``X^T X`` with any token weights, from ``dllm_calib``), which equals
``sum_t |(Qfake(W diag s)) (x_t / s) - W x_t|^2`` without storing the activations. ``Qfake`` is RTN with the
target spec; the actual quantizer (RTN, GPTQ, CGQ, ...) runs afterwards on the scaled weights. If no
candidate beats ``s = 1`` the group is left unscaled.

Scale groups of a block (``AWQConfig.groups``): ``"attn"`` attn_norm -> q, k, v; ``"vo"`` v -> o (with GQA
the scale lives on the kv channels and is shared by the query heads of each group); ``"mlp"`` mlp_norm ->
gate, up; ``"down"`` up -> down. Statistics are looked up under the qualified name of the group's first
reader: q, o, gate, down.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from dllm_calib import (
    ChannelStatsCollector,
    HessianCollector,
    LogRow,
    MethodConfig,
    MethodContext,
    check_bool,
    check_choice,
    check_positive_int,
    collect,
)
from dllm_kernels import QuantSpec
from torch import Tensor, nn

from dllm_weightquant._checks import check_hessian, check_uniform_spec, check_weight
from dllm_weightquant.rtn import fake_quantize_weight, weight_cells

if TYPE_CHECKING:
    from dllm_sampler import BlockTopology, Topology

__all__ = [
    "AWQ_GROUPS",
    "AWQConfig",
    "AWQScale",
    "apply_awq",
    "awq_folded_roles",
    "awq_readers",
    "awq_search_scale",
    "awq_step",
]

AWQ_GROUPS = ("attn", "vo", "mlp", "down")
_READER_ROLE = {"attn": "q", "vo": "o", "mlp": "gate", "down": "down"}
_FOLD_ROLES = {"attn": ("q", "k", "v"), "vo": ("v", "o"), "mlp": ("gate", "up"), "down": ("up", "down")}
"""The linears whose weights each group's fold edits (the producer's rows and the consumers' columns)."""
_GROUP_LINEARS: dict[str, Callable[[BlockTopology], list[nn.Linear]]] = {
    "attn": lambda b: b.attn_inputs,
    "vo": lambda b: [b.o_proj],
    "mlp": lambda b: b.mlp_inputs,
    "down": lambda b: [b.down_proj],
}
_FOLD: dict[str, Callable[[Topology, BlockTopology, Tensor], None]] = {
    "attn": lambda t, b, s: t.fold_norm_scale(b, "attn", s),
    "vo": lambda t, b, s: t.fold_vo_scale(b, s),
    "mlp": lambda t, b, s: t.fold_norm_scale(b, "mlp", s),
    "down": lambda t, b, s: t.fold_up_down_scale(b, s),
}


@dataclass(frozen=True)
class AWQConfig(MethodConfig):
    """AWQ scale search.

    Attributes:
        n_grid: number of alphas, ``alpha = k / n_grid`` for ``k < n_grid`` (20).
        duo_scaling: also divide by the weight magnitude ``wbar^(1 - alpha)``.
        groups: which scale groups of each block to search (subset of ``AWQ_GROUPS``).
    """

    n_grid: int = 20
    duo_scaling: bool = False
    groups: tuple[str, ...] = AWQ_GROUPS

    def validate(self) -> None:
        check_positive_int("AWQConfig", "n_grid", self.n_grid)
        check_bool("AWQConfig", "duo_scaling", self.duo_scaling)
        if not isinstance(self.groups, tuple) or not self.groups:
            raise ValueError(
                f"AWQConfig.groups must be a non-empty tuple of {list(AWQ_GROUPS)}, got {self.groups!r}"
            )
        for g in self.groups:
            check_choice("AWQConfig", "groups", g, AWQ_GROUPS)


@dataclass(frozen=True, eq=False)
class AWQScale:
    """Result of one scale search.

    Attributes:
        scale: float32 ``[in]`` (the linears' columns are multiplied by it); all ones if unscaled.
        alpha: the chosen exponent, None when no candidate beat ``s = 1``.
        error: output error of the chosen scale.
        baseline_error: output error without scaling (``s = 1``).
    """

    scale: Tensor
    alpha: float | None
    error: float
    baseline_error: float


def _weight_magnitude(weight: Tensor, spec: QuantSpec) -> Tensor:
    """``wbar [in]``: mean over rows of ``|W|`` normalised by the absmax of each scale cell."""
    cells = weight_cells(weight.abs(), spec)
    norm = cells / cells.amax(dim=-1, keepdim=True).clamp(min=1e-12)
    return norm.reshape(weight.shape).mean(dim=0)


def _output_error(weight: Tensor, scale: Tensor, hessian: Tensor, spec: QuantSpec) -> float:
    """``tr(E H E^T)`` with ``E = Qfake(W diag(s)) diag(1/s) - W`` (float64)."""
    q = fake_quantize_weight(weight * scale.to(weight.dtype), spec).to(torch.float64) / scale.to(
        torch.float64
    )
    e = q - weight.to(torch.float64)
    return float(((e @ hessian) * e).sum())


def awq_search_scale(
    weights: Sequence[Tensor],
    act_mean_abs: Tensor,
    hessian: Tensor,
    spec: QuantSpec,
    config: AWQConfig | None = None,
    channel_map: Tensor | None = None,
) -> AWQScale:
    """Search the AWQ scale of linears ``weights`` (each ``[out_i, in]``) sharing one input.

    Args:
        act_mean_abs: ``mean_t |x_t|`` per input channel ``[in]`` (the scale channels, see ``channel_map``).
        hessian: ``[in, in]`` Hessian of the shared input.
        spec: the weight format the search quantizes to (RTN proxy).
        channel_map: optional int64 ``[in]`` mapping each input column to a scale channel (GQA v -> o: the
            column's kv channel); the returned ``scale`` is then per scale channel, and ``act_mean_abs`` is
            given per scale channel too.
    """
    config = config or AWQConfig()
    if not weights:
        raise ValueError("awq_search_scale needs at least one weight")
    w = torch.cat([check_weight(x, "weights[i]").float() for x in weights], dim=0)
    inp = w.shape[1]
    spec = check_uniform_spec(spec, inp, "AWQ")
    h = check_hessian(hessian, inp).to(w.device, torch.float64)
    n_scale = inp if channel_map is None else int(channel_map.max()) + 1
    if not isinstance(act_mean_abs, Tensor) or tuple(act_mean_abs.shape) != (n_scale,):
        raise ValueError(
            f"act_mean_abs must be a tensor [{n_scale}], got {getattr(act_mean_abs, 'shape', None)}"
        )
    x_mean = act_mean_abs.detach().to(w.device, torch.float64)
    if not bool(torch.isfinite(x_mean).all()) or bool((x_mean < 0).any()):
        raise ValueError("act_mean_abs must be finite and non-negative (a mean of |x|)")
    cmap = None if channel_map is None else channel_map.to(w.device)

    def expand(s: Tensor) -> Tensor:
        return s if cmap is None else s[cmap]

    w_mean = _weight_magnitude(w, spec).to(torch.float64)
    if cmap is not None:
        sums = torch.zeros(n_scale, dtype=torch.float64, device=w.device).index_add_(0, cmap, w_mean)
        w_mean = sums / torch.bincount(cmap, minlength=n_scale).clamp(min=1)

    ones = torch.ones(n_scale, dtype=torch.float64, device=w.device)
    baseline = _output_error(w, expand(ones), h, spec)
    best = AWQScale(scale=ones.float().cpu(), alpha=None, error=baseline, baseline_error=baseline)
    for k in range(config.n_grid):
        alpha = k / config.n_grid
        s = x_mean.pow(alpha)
        if config.duo_scaling:
            s = s / (w_mean.pow(1.0 - alpha) + 1e-4)
        s = s.clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        err = _output_error(w, expand(s), h, spec)
        if err < best.error:
            best = AWQScale(scale=s.float().cpu(), alpha=alpha, error=err, baseline_error=baseline)
    return best


def apply_awq(
    topology: Topology,
    hessians: Mapping[str, Tensor],
    act_mean_abs: Mapping[str, Tensor],
    spec: QuantSpec,
    config: AWQConfig | None = None,
    blocks: Sequence[int] | None = None,
) -> dict[str, AWQScale]:
    """Search and fold AWQ scales for ``blocks`` (default all) of a model.

    Returns ``"{block}.{group}" -> AWQScale`` for every searched group.

    ``hessians`` / ``act_mean_abs`` map qualified linear names to the statistics of their input (looked up
    for the first reader of each group: q, o, gate, down). Folding uses the topology's invariance-preserving
    edits, so the float model computes the same function afterwards; the statistics of a scaled input
    change (``x / s``), so collect fresh ones before running a Hessian-based quantizer on those linears.
    """
    config = config or AWQConfig()
    results: dict[str, AWQScale] = {}
    indices = range(len(topology)) if blocks is None else blocks
    for index in indices:
        block = topology.block(index)
        for group in config.groups:
            reader = block.names[_READER_ROLE[group]]
            if reader not in hessians or reader not in act_mean_abs:
                raise KeyError(
                    f"AWQ group {group!r} of block {index} needs the statistics of {reader!r} "
                    "(Hessian and mean |x| of its input); collect them first"
                )
            stats, channel_map = act_mean_abs[reader], None
            if group == "vo":
                # o's input column (head h, dim d) carries kv channel (h // G, d); the scale lives on those.
                heads = torch.arange(block.n_heads) // block.gqa_groups
                channel_map = (heads[:, None] * block.head_dim + torch.arange(block.head_dim)).reshape(-1)
                stats = (
                    stats.reshape(block.n_kv_heads, block.gqa_groups, block.head_dim).mean(dim=1).reshape(-1)
                )
            linears = _GROUP_LINEARS[group](block)
            found = awq_search_scale(
                [lin.weight for lin in linears], stats, hessians[reader], spec, config, channel_map
            )
            if found.alpha is not None:
                _FOLD[group](topology, block, found.scale)
            results[f"{index}.{group}"] = found
    return results


def awq_readers(config: AWQConfig) -> tuple[str, ...]:
    """The roles whose input statistics the searched groups read (q, o, gate, down), without repeats."""
    return tuple(dict.fromkeys(_READER_ROLE[g] for g in config.groups))


def awq_folded_roles(config: AWQConfig) -> frozenset[str]:
    """The linear roles whose weights the searched groups' folds edit."""
    return frozenset(r for g in config.groups for r in _FOLD_ROLES[g])


def awq_step(context: MethodContext, config: AWQConfig) -> list[LogRow]:
    """AWQ as a pipeline step: per block of ``context``, collect the readers' Hessian and mean |x| on the
    block's feed, then search and fold the scales (`apply_awq`); one log row per searched group (its
    output error, and the search time shared out over the groups)."""
    rows: list[LogRow] = []
    for index, feed in context.feeds():
        start = time.perf_counter()
        block = context.dlm.topology.block(index)
        readers = {g: block.names[_READER_ROLE[g]] for g in config.groups}
        stats = collect(
            feed,
            list(dict.fromkeys(readers.values())),
            [HessianCollector(), ChannelStatsCollector(name="channels")],
        )
        hessians = {n: s.hessian() for n, s in stats["hessian"].items()}
        means = {n: s.mean_abs for n, s in stats["channels"].items()}
        found = apply_awq(context.dlm.topology, hessians, means, context.weight_spec, config, blocks=[index])
        seconds = (time.perf_counter() - start) / max(len(found), 1)
        rows += [
            LogRow(index, readers[key.split(".", 1)[1]], "awq", loss=scale.error, seconds=seconds)
            for key, scale in found.items()
        ]
    return rows
