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

``AWQConfig.loss`` picks what a candidate is scored on instead of the proxy above: the attention/MLP
sublayer's output, the block's output, or llm-awq's per-architecture choice (`dllm_weightquant.awq_loss`);
those candidates are scored on forward passes of the block's feed (``max_tokens`` real tokens).

``AWQConfig.clip`` adds llm-awq's clip search after the scales are folded (`dllm_weightquant.awq_clip`): the
searched linears (all but q and k by default) are clamped per (row, input group) to the bound that
minimises the group's output error, on Hessians collected again on the scaled inputs. This changes the
float model on purpose; the quantizer that follows rounds the clamped weights.

QDLM ran llm-awq as ``--w_bit 4 --q_group_size 128 --run_awq`` (zero point on): in a recipe that is
``scheme.weights: {bits: 4, symmetric: false, group_size: 128}`` and ``{method: awq, loss: auto, clip: true}``
followed by ``{method: rtn}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from dllm_calib import (
    ChannelStatsCollector,
    Feed,
    HessianCollector,
    LogRow,
    MethodConfig,
    MethodContext,
    check_bool,
    check_choice,
    check_positive_int,
    check_range,
    collect,
)
from dllm_kernels import QuantSpec
from dllm_sampler import LINEAR_ROLES
from torch import Tensor, nn

from dllm_weightquant._checks import check_hessian, check_uniform_spec, check_weight
from dllm_weightquant.awq_clip import AWQClip, apply_clip, awq_search_clip
from dllm_weightquant.awq_loss import (
    AWQ_LOSSES,
    OutputProbe,
    inspected_module,
    quantized_scaled,
    resolve_loss,
)
from dllm_weightquant.rtn import fake_quantize_weight, weight_cells

if TYPE_CHECKING:
    from dllm_sampler import BlockTopology, Topology

__all__ = [
    "AWQ_GROUPS",
    "AWQ_LOSSES",
    "AWQConfig",
    "AWQScale",
    "apply_awq",
    "apply_awq_clip",
    "awq_clip_roles",
    "awq_folded_roles",
    "awq_hessian_roles",
    "awq_readers",
    "awq_search_scale",
    "awq_search_scale_on_outputs",
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
    """AWQ scale search, optionally followed by llm-awq's clip search.

    Attributes:
        n_grid: number of alphas, ``alpha = k / n_grid`` for ``k < n_grid`` (20).
        duo_scaling: also divide by the weight magnitude ``wbar^(1 - alpha)``.
        groups: which scale groups of each block to search (subset of ``AWQ_GROUPS``).
        loss: what a candidate scale is scored on (``AWQ_LOSSES``): ``"linear"`` the group's Hessian proxy,
            ``"sublayer"`` the attention / MLP output, ``"block"`` the block output (vo and down: o's and
            down's output), ``"auto"`` llm-awq's choice per architecture (LLaDA block, Dream sublayer).
        max_tokens: real calibration tokens (whole batches, from the first) that the ``sublayer`` /
            ``block`` losses run on; llm-awq scores on its 128 x 512 = 65536 tokens.
        clip: after folding the scales, clamp the searched linears' weights per (row, input group)
            (llm-awq's ``auto_clip``).
        clip_n_grid: the clip ratio step is ``1 / clip_n_grid`` (llm-awq: 20).
        clip_max_shrink: the smallest clip ratio tried is above ``1 - clip_max_shrink`` (llm-awq: 0.5).
        clip_skip: linear roles the clip search leaves alone (llm-awq: q and k, "due to qk bmm").
    """

    n_grid: int = 20
    duo_scaling: bool = False
    groups: tuple[str, ...] = AWQ_GROUPS
    loss: str = "linear"
    max_tokens: int = 8192
    clip: bool = False
    clip_n_grid: int = 20
    clip_max_shrink: float = 0.5
    clip_skip: tuple[str, ...] = ("q", "k")

    def validate(self) -> None:
        check_positive_int("AWQConfig", "n_grid", self.n_grid)
        check_bool("AWQConfig", "duo_scaling", self.duo_scaling)
        if not isinstance(self.groups, tuple) or not self.groups:
            raise ValueError(
                f"AWQConfig.groups must be a non-empty tuple of {list(AWQ_GROUPS)}, got {self.groups!r}"
            )
        for g in self.groups:
            check_choice("AWQConfig", "groups", g, AWQ_GROUPS)
        check_choice("AWQConfig", "loss", self.loss, AWQ_LOSSES)
        check_positive_int("AWQConfig", "max_tokens", self.max_tokens)
        check_bool("AWQConfig", "clip", self.clip)
        check_positive_int("AWQConfig", "clip_n_grid", self.clip_n_grid)
        check_range("AWQConfig", "clip_max_shrink", self.clip_max_shrink, 0.0, 1.0, hi_open=True)
        if not isinstance(self.clip_skip, tuple):
            raise ValueError(
                f"AWQConfig.clip_skip must be a tuple (list in a recipe) of roles from {list(LINEAR_ROLES)}, "
                f"got {self.clip_skip!r}"
            )
        for role in self.clip_skip:
            check_choice("AWQConfig", "clip_skip", role, LINEAR_ROLES)


@dataclass(frozen=True, eq=False)
class AWQScale:
    """Result of one scale search.

    Attributes:
        scale: float32 ``[in]`` (the linears' columns are multiplied by it); all ones if unscaled.
        alpha: the chosen exponent, None when no candidate beat ``s = 1``.
        error: output error of the chosen scale: for the ``"linear"`` loss ``tr(E H E^T)`` (squared output
            units summed over the group's output channels, mean per token); for the forward-pass losses the
            inspected output's mean squared error (mean over tokens and channels).
        baseline_error: output error without scaling (``s = 1``), in the same units.
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


@dataclass(frozen=True, eq=False)
class _Problem:
    """A scale search's inputs, checked: ``weight`` float32 ``[out, in]`` (the group's weights stacked),
    ``x_mean`` / ``w_mean`` float64 ``[n_scale]`` and the scale-channel -> column map (None: identity)."""

    weight: Tensor
    x_mean: Tensor
    w_mean: Tensor
    channel_map: Tensor | None

    def expand(self, s: Tensor) -> Tensor:
        """A per-scale-channel vector ``[n_scale]`` as a per-column one ``[in]``."""
        return s if self.channel_map is None else s[self.channel_map]


def _problem(
    weights: Sequence[Tensor], act_mean_abs: Tensor, spec: QuantSpec, channel_map: Tensor | None
) -> tuple[_Problem, QuantSpec]:
    """Check the shared inputs of the scale searches (see `awq_search_scale`)."""
    if not weights:
        raise ValueError("awq_search_scale needs at least one weight")
    w = torch.cat([check_weight(x, f"weights[{i}]").float() for i, x in enumerate(weights)], dim=0)
    spec = check_uniform_spec(spec, w.shape[1], "AWQ")
    n_scale = w.shape[1] if channel_map is None else int(channel_map.max()) + 1
    if not isinstance(act_mean_abs, Tensor) or tuple(act_mean_abs.shape) != (n_scale,):
        raise ValueError(
            f"act_mean_abs must be a tensor [{n_scale}], got {getattr(act_mean_abs, 'shape', None)}"
        )
    x_mean = act_mean_abs.detach().to(w.device, torch.float64)
    if not bool(torch.isfinite(x_mean).all()) or bool((x_mean < 0).any()):
        raise ValueError("act_mean_abs must be finite and non-negative (a mean of |x|)")
    cmap = None if channel_map is None else channel_map.to(w.device)
    w_mean = _weight_magnitude(w, spec).to(torch.float64)
    if cmap is not None:
        sums = torch.zeros(n_scale, dtype=torch.float64, device=w.device).index_add_(0, cmap, w_mean)
        w_mean = sums / torch.bincount(cmap, minlength=n_scale).clamp(min=1)
    return _Problem(w, x_mean, w_mean, cmap), spec


def _best_scale(problem: _Problem, score: Callable[[Tensor], float], config: AWQConfig) -> AWQScale:
    """The candidate with the least ``score(per-column scale [in])``, or ``s = 1`` if none beats it.

    Candidates: ``s = mean|x|^alpha`` (with ``duo_scaling`` divided by ``wbar^(1 - alpha)``), clamped to
    ``>= 1e-4`` and normalised by ``sqrt(max(s) * min(s))``.
    """
    ones = torch.ones_like(problem.x_mean)
    baseline = score(problem.expand(ones))
    best = AWQScale(scale=ones.float().cpu(), alpha=None, error=baseline, baseline_error=baseline)
    for k in range(config.n_grid):
        alpha = k / config.n_grid
        s = problem.x_mean.pow(alpha)
        if config.duo_scaling:
            s = s / (problem.w_mean.pow(1.0 - alpha) + 1e-4)
        s = s.clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        err = score(problem.expand(s))
        if err < best.error:
            best = AWQScale(scale=s.float().cpu(), alpha=alpha, error=err, baseline_error=baseline)
    return best


def awq_search_scale(
    weights: Sequence[Tensor],
    act_mean_abs: Tensor,
    hessian: Tensor,
    spec: QuantSpec,
    config: AWQConfig | None = None,
    channel_map: Tensor | None = None,
) -> AWQScale:
    """Search the AWQ scale of linears ``weights`` (each ``[out_i, in]``) sharing one input, scored on the
    Hessian proxy ``tr(E H E^T)`` (the ``"linear"`` loss).

    Args:
        act_mean_abs: ``mean_t |x_t|`` per input channel ``[in]`` (the scale channels, see ``channel_map``).
        hessian: ``[in, in]`` Hessian of the shared input.
        spec: the weight format the search quantizes to (RTN proxy).
        channel_map: optional int64 ``[in]`` mapping each input column to a scale channel (GQA v -> o: the
            column's kv channel); the returned ``scale`` is then per scale channel, and ``act_mean_abs`` is
            given per scale channel too.
    """
    config = config or AWQConfig()
    problem, spec = _problem(weights, act_mean_abs, spec, channel_map)
    h = check_hessian(hessian, problem.weight.shape[1]).to(problem.weight.device, torch.float64)
    return _best_scale(problem, lambda s: _output_error(problem.weight, s, h, spec), config)


def awq_search_scale_on_outputs(
    linears: Sequence[nn.Linear],
    act_mean_abs: Tensor,
    probe: OutputProbe,
    spec: QuantSpec,
    config: AWQConfig | None = None,
    channel_map: Tensor | None = None,
) -> AWQScale:
    """Search the AWQ scale of ``linears`` (sharing one input) scored on the output ``probe`` inspects.

    Each candidate ``s`` is scored with the linears holding ``Qfake(W diag s) diag(1/s)`` while the probe's
    feed runs (the error is the probe's mean squared output difference to the float output); the
    weights are restored afterwards. Arguments as `awq_search_scale`.
    """
    config = config or AWQConfig()
    originals = [lin.weight.detach().clone() for lin in linears]
    problem, spec = _problem(originals, act_mean_abs, spec, channel_map)

    def score(s: Tensor) -> float:
        with quantized_scaled(linears, originals, s, spec):
            return probe.error()

    return _best_scale(problem, score, config)


def _group_stats(
    block: BlockTopology, group: str, act_mean_abs: Mapping[str, Tensor]
) -> tuple[Tensor, Tensor | None]:
    """The group's reader mean |x| per scale channel and its column -> scale-channel map (vo with GQA)."""
    stats = act_mean_abs[block.names[_READER_ROLE[group]]]
    if group != "vo":
        return stats, None
    # o's input column (head h, dim d) carries kv channel (h // G, d); the scale lives on those.
    heads = torch.arange(block.n_heads) // block.gqa_groups
    channel_map = (heads[:, None] * block.head_dim + torch.arange(block.head_dim)).reshape(-1)
    stats = stats.reshape(block.n_kv_heads, block.gqa_groups, block.head_dim).mean(dim=1).reshape(-1)
    return stats, channel_map


def _check_stats(
    block: BlockTopology,
    group: str,
    hessians: Mapping[str, Tensor],
    act_mean_abs: Mapping[str, Tensor],
    loss: str,
) -> None:
    reader = block.names[_READER_ROLE[group]]
    if reader not in act_mean_abs or (loss == "linear" and reader not in hessians):
        what = "Hessian and mean |x|" if loss == "linear" else "mean |x|"
        raise KeyError(
            f"AWQ group {group!r} of block {block.index} needs the statistics of {reader!r} "
            f"({what} of its input); collect them first"
        )


def apply_awq(
    topology: Topology,
    hessians: Mapping[str, Tensor],
    act_mean_abs: Mapping[str, Tensor],
    spec: QuantSpec,
    config: AWQConfig | None = None,
    blocks: Sequence[int] | None = None,
    feed: Feed | None = None,
) -> dict[str, AWQScale]:
    """Search and fold AWQ scales for ``blocks`` (default all) of a model.

    Returns ``"{block}.{group}" -> AWQScale`` for every searched group.

    ``hessians`` / ``act_mean_abs`` map qualified linear names to the statistics of their input (looked up
    for the first reader of each group: q, o, gate, down; the Hessians only for the ``"linear"`` loss).
    The other losses run ``feed``, a `Feed` whose forward runs the searched blocks: the pipeline's block
    feed, or for ``"sublayer"`` also a whole-model feed (``"block"`` reads the feed's output, so it needs a
    feed that runs just that block). Folding uses the topology's invariance-preserving edits, so the float
    model computes the same function afterwards; the statistics of a scaled input change (``x / s``), so
    collect fresh ones before running a Hessian-based quantizer on those linears.
    """
    config = config or AWQConfig()
    loss = resolve_loss(config.loss, topology.arch)
    if loss != "linear" and feed is None:
        raise ValueError(f"AWQConfig.loss {config.loss!r} scores on forward passes: pass the block's feed")
    results: dict[str, AWQScale] = {}
    for index in range(len(topology)) if blocks is None else blocks:
        block = topology.block(index)
        for group in config.groups:
            _check_stats(block, group, hessians, act_mean_abs, loss)
            stats, channel_map = _group_stats(block, group, act_mean_abs)
            linears = _GROUP_LINEARS[group](block)
            if loss == "linear":
                h = hessians[block.names[_READER_ROLE[group]]]
                found = awq_search_scale([lin.weight for lin in linears], stats, h, spec, config, channel_map)
            else:
                assert feed is not None
                width = block.attn_norm.weight.shape[0]
                probe = OutputProbe(feed, inspected_module(block, loss, group), config.max_tokens, width)
                found = awq_search_scale_on_outputs(linears, stats, probe, spec, config, channel_map)
            if found.alpha is not None:
                _FOLD[group](topology, block, found.scale)
            results[f"{index}.{group}"] = found
    return results


def apply_awq_clip(
    topology: Topology,
    hessians: Mapping[str, Tensor],
    spec: QuantSpec,
    config: AWQConfig | None = None,
    blocks: Sequence[int] | None = None,
    ignored: frozenset[str] = frozenset(),
) -> dict[str, AWQClip]:
    """Search and apply the clip bounds of the clipped linears (`awq_clip_roles`) of ``blocks``.

    ``hessians`` maps the weight holder of each clipped linear (``BlockTopology.weight_holder``: the
    linear itself when unwrapped) to the Hessian of the input its weight sees, collected after the scales
    were folded. Linears named in ``ignored`` (topology names) stay as they are. Returns the holder's
    name -> `AWQClip`; the weights are clamped in place.
    """
    config = config or AWQConfig()
    results: dict[str, AWQClip] = {}
    for index in range(len(topology)) if blocks is None else blocks:
        block = topology.block(index)
        for role in awq_clip_roles(config):
            if block.names[role] in ignored:
                continue
            holder = block.weight_holder(role)
            if holder not in hessians:
                raise KeyError(f"AWQ clip of {holder!r} needs the Hessian of its input; collect it first")
            weight = topology.model.get_submodule(holder).weight
            check_weight(weight, f"{holder}.weight")
            found = awq_search_clip(
                weight, hessians[holder], spec, config.clip_n_grid, config.clip_max_shrink
            )
            apply_clip(weight, found)
            results[holder] = found
    return results


def awq_readers(config: AWQConfig) -> tuple[str, ...]:
    """The roles whose input statistics the searched groups read (q, o, gate, down), without repeats."""
    return tuple(dict.fromkeys(_READER_ROLE[g] for g in config.groups))


def awq_folded_roles(config: AWQConfig) -> frozenset[str]:
    """The linear roles whose weights the searched groups' folds edit."""
    return frozenset(r for g in config.groups for r in _FOLD_ROLES[g])


def awq_clip_roles(config: AWQConfig) -> tuple[str, ...]:
    """The linear roles the clip search clamps (none unless ``config.clip``), in forward order."""
    return tuple(r for r in LINEAR_ROLES if r not in config.clip_skip) if config.clip else ()


def awq_hessian_roles(config: AWQConfig) -> tuple[str, ...]:
    """The roles whose input Hessian AWQ collects: the readers for the ``"linear"`` loss (before the fold)
    and the clipped linears (after it), in forward order."""
    roles = set(awq_clip_roles(config))
    if config.loss == "linear":
        roles |= set(awq_readers(config))
    return tuple(r for r in LINEAR_ROLES if r in roles)


def _search_scales(context: MethodContext, config: AWQConfig, index: int, feed: Feed) -> list[LogRow]:
    """Collect the readers' statistics of block ``index`` on ``feed``, search and fold its scales."""
    start = time.perf_counter()
    block = context.dlm.topology.block(index)
    for role in LINEAR_ROLES:  # a NaN weight is named here, before the statistics turn it into NaN inputs
        holder = block.weight_holder(role)
        check_weight(context.dlm.model.get_submodule(holder).weight, f"{holder}.weight")
    readers = {g: block.names[_READER_ROLE[g]] for g in config.groups}
    collectors = [ChannelStatsCollector(name="channels")]
    if config.loss == "linear":
        collectors.append(HessianCollector())
    stats = collect(feed, list(dict.fromkeys(readers.values())), collectors)
    hessians = {n: s.hessian() for n, s in stats.get("hessian", {}).items()}
    means = {n: s.mean_abs for n, s in stats["channels"].items()}
    found = apply_awq(
        context.dlm.topology, hessians, means, context.weight_spec, config, blocks=[index], feed=feed
    )
    seconds = (time.perf_counter() - start) / max(len(found), 1)
    return [
        LogRow(index, readers[key.split(".", 1)[1]], "awq", loss=scale.error, seconds=seconds)
        for key, scale in found.items()
    ]


def _search_clips(context: MethodContext, config: AWQConfig, index: int, feed: Feed) -> list[LogRow]:
    """Collect the clipped linears' Hessians of block ``index`` on ``feed`` (after the fold) and clip."""
    start = time.perf_counter()
    block = context.dlm.topology.block(index)
    names = {block.weight_holder(r): block.names[r] for r in awq_clip_roles(config)}
    names = {holder: name for holder, name in names.items() if name not in context.ignored}
    if not names:
        return []
    stats = collect(feed, list(names), [HessianCollector()])
    hessians = {n: s.hessian() for n, s in stats["hessian"].items()}
    found = apply_awq_clip(
        context.dlm.topology, hessians, context.weight_spec, config, [index], context.ignored
    )
    seconds = (time.perf_counter() - start) / max(len(found), 1)
    return [
        LogRow(index, names[holder], "awq_clip", loss=clip.error, seconds=seconds)
        for holder, clip in found.items()
    ]


def awq_step(context: MethodContext, config: AWQConfig) -> list[LogRow]:
    """AWQ as a pipeline step: per block of ``context``, collect the readers' statistics on the block's feed
    (mean |x|, and the Hessian for the ``"linear"`` loss), search and fold the scales (`apply_awq`); with
    ``clip``, collect the clipped linears' Hessians again on the scaled block and clip (`apply_awq_clip`).

    One log row per searched group (its search objective, and the search time shared out over the
    groups), and with ``clip`` one ``awq_clip`` row per clipped linear (the summed group objective).
    """
    rows: list[LogRow] = []
    for index, feed in context.feeds():
        rows += _search_scales(context, config, index, feed)
        if config.clip:
            rows += _search_clips(context, config, index, feed)
    return rows
