"""SmoothQuant: move activation outliers into the weights with per-channel scales folded via the topology.

For a producer -> consumers pair with activation ``X`` (the consumers' shared input) and consumer weights
``W_i``, channel ``j`` gets ``s_j = max|X_j|^alpha / max_i max|W_i[:, j]|^(1 - alpha)``; the producer's output
is divided by ``s`` and the consumers' input columns multiplied by ``s`` (``dllm_sampler.Topology`` folds:
``fold_norm_scale``, ``fold_vo_scale``, ``fold_up_down_scale``), so the float model is unchanged. The pairs
of a block (``SMOOTH_PAIRS``, the names of AWQ's scale groups):

* ``"attn"``: attn_norm -> q, k, v;
* ``"vo"``: v -> o. Under grouped-query attention o's input column (query head h, dim d) reads kv channel
  (h // G, d), so the scale lives on the ``K * Dh`` kv channels: the activation absmax and the o-weight
  column absmax are maxed over the G columns that share a kv channel, and ``fold_vo_scale`` spreads the
  scale over the group's o columns (multi-head attention is the case G = 1);
* ``"mlp"``: mlp_norm -> gate, up;
* ``"down"``: up -> down (the down-projection input, where diffusion LLMs carry massive outliers).

A channel whose activation or weight range is zero keeps ``s = 1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from dllm_calib import MethodConfig, check_choice, check_range
from dllm_sampler import BlockTopology, DiffusionLM, Topology
from torch import Tensor, nn

from dllm_actquant.modules import as_topology, check_transformable

__all__ = [
    "SMOOTH_PAIRS",
    "SmoothQuantConfig",
    "apply_smoothquant",
    "fold_pair_scale",
    "input_scale",
    "pair_scales",
    "smoothquant_scales",
]

SMOOTH_PAIRS: tuple[str, ...] = ("attn", "vo", "mlp", "down")
"""The producer -> consumers pairs of a block, in forward order (see the module docstring)."""

PAIR_CONSUMERS: dict[str, tuple[str, ...]] = {
    "attn": ("q", "k", "v"),
    "vo": ("o",),
    "mlp": ("gate", "up"),
    "down": ("down",),
}
"""Pair -> the roles of the linears reading the smoothed activation (any one's input absmax will do)."""

_PRODUCER = {"attn": "attn_norm", "vo": "v", "mlp": "mlp_norm", "down": "up"}


@dataclass(frozen=True)
class SmoothQuantConfig(MethodConfig):
    """SmoothQuant settings.

    Attributes:
        alpha: migration strength in [0, 1] (0: no activation change; 0.5: equal ranges; 1: all to weights),
            for every pair without its own entry in ``alphas``.
        pairs: which pairs of each block to smooth (distinct names from ``SMOOTH_PAIRS``).
        alphas: optional per-pair overrides of ``alpha`` (e.g. ``{"down": 0.8}``); keys must be in ``pairs``.
    """

    alpha: float = 0.5
    pairs: tuple[str, ...] = ("attn", "mlp")
    alphas: Mapping[str, float] | None = None

    def validate(self) -> None:
        check_range("SmoothQuantConfig", "alpha", self.alpha, 0.0, 1.0)
        if not isinstance(self.pairs, tuple) or not self.pairs or len(set(self.pairs)) != len(self.pairs):
            raise ValueError(
                f"SmoothQuantConfig.pairs must be a non-empty tuple of distinct names from "
                f"{list(SMOOTH_PAIRS)}, got {self.pairs!r}"
            )
        for pair in self.pairs:
            check_choice("SmoothQuantConfig", "pairs", pair, SMOOTH_PAIRS)
        if self.alphas is None:
            return
        if not isinstance(self.alphas, Mapping):
            raise ValueError(
                "SmoothQuantConfig.alphas must be a mapping pair -> alpha (e.g. {'down': 0.8}) or None, got "
                f"{self.alphas!r}"
            )
        for pair, value in self.alphas.items():
            if pair not in self.pairs:
                raise ValueError(
                    f"SmoothQuantConfig.alphas keys must be smoothed pairs {list(self.pairs)} (names from "
                    f"{list(SMOOTH_PAIRS)}), got {pair!r}"
                )
            check_range("SmoothQuantConfig", f"alphas[{pair!r}]", value, 0.0, 1.0)

    def alpha_for(self, pair: str) -> float:
        """The migration strength of ``pair``: its ``alphas`` entry, else ``alpha``."""
        return float((self.alphas or {}).get(pair, self.alpha))


def _balance(act: Tensor, weight: Tensor, alpha: float) -> Tensor:
    """``s = act^alpha / weight^(1 - alpha)`` per channel (float64 ``[C]``), 1 where either range is zero."""
    if act.shape != weight.shape:
        raise ValueError(
            f"activation absmax has {act.numel()} channels but the weights have {weight.numel()} inputs"
        )
    if not bool(torch.isfinite(act).all()):
        raise ValueError("activation absmax holds NaN/Inf; recollect the statistics")
    live = (act > 0) & (weight > 0)
    s = torch.ones_like(act)
    s[live] = act[live].pow(alpha) / weight[live].pow(1.0 - alpha)
    return s


def _cpu64(x: Tensor) -> Tensor:
    return torch.as_tensor(x).detach().to(device="cpu", dtype=torch.float64).reshape(-1)


def _column_absmax(weights: Sequence[Tensor]) -> Tensor:
    """float64 CPU ``[C]``: the largest ``|W_i[:, j]|`` over the rows of every weight ``[out_i, C]``."""
    return torch.stack([_cpu64(w.detach().abs().amax(0)) for w in weights]).amax(0)


def smoothquant_scales(act_absmax: Tensor, weights: Sequence[Tensor], alpha: float) -> Tensor:
    """``s [C]`` float64 (CPU) from the activation absmax ``[C]`` and consumer weights ``[out_i, C]``."""
    return _balance(_cpu64(act_absmax), _column_absmax(weights), alpha)


def _kv_channel_max(x: Tensor, block: BlockTopology) -> Tensor:
    """``x [H * Dh]`` (one value per o input column) maxed over the G query heads of each kv head:
    ``[K * Dh]``, entry (j, d) = max over h in group j of x[h, d]."""
    if x.numel() != block.n_heads * block.head_dim:
        raise ValueError(
            f"block {block.index}: o's input has {block.n_heads * block.head_dim} channels, got {x.numel()}"
        )
    return x.reshape(block.n_kv_heads, block.gqa_groups, block.head_dim).amax(dim=1).reshape(-1)


def pair_scales(block: BlockTopology, pair: str, act_absmax: Tensor, alpha: float) -> Tensor:
    """The scales of one pair on the producer's output channels, float64 CPU.

    Args:
        block: the block.
        pair: one of ``SMOOTH_PAIRS``.
        act_absmax: per-channel input absmax ``[C]`` of the pair's consumers (for ``"vo"``: o's input,
            ``[H * Dh]``; for ``"down"``: down's input, ``[I]``), in activation units.
        alpha: migration strength.

    Returns:
        ``s`` of shape ``[D]`` (attn, mlp), ``[K * Dh]`` (vo: one per kv channel) or ``[I]`` (down).
    """
    weights: list[Tensor] = [block.module(r).weight for r in PAIR_CONSUMERS[pair]]  # type: ignore[misc]
    if pair != "vo":
        return smoothquant_scales(act_absmax, weights, alpha)
    act = _kv_channel_max(_cpu64(act_absmax), block)
    return _balance(act, _kv_channel_max(_column_absmax(weights), block), alpha)


def input_scale(block: BlockTopology, pair: str, s: Tensor) -> Tensor:
    """The factor ``[C]`` the pair's consumers' input is divided by once ``s`` is folded: ``s`` itself, or for
    ``"vo"`` the kv-channel scale ``[K * Dh]`` repeated over each group's query heads (``[H * Dh]``)."""
    if pair != "vo":
        return s
    return s.view(block.n_kv_heads, block.head_dim).repeat_interleave(block.gqa_groups, dim=0).reshape(-1)


def fold_pair_scale(topology: Topology, block: BlockTopology, pair: str, s: Tensor) -> None:
    """Fold ``s`` (from `pair_scales`) into the pair's producer and consumers; the float function is kept."""
    if pair in ("attn", "mlp"):
        topology.fold_norm_scale(block, pair, s)
    elif pair == "vo":
        topology.fold_vo_scale(block, s)
    else:
        topology.fold_up_down_scale(block, s)


def _absmax(stats: Mapping[str, Any], block: BlockTopology, pair: str) -> Tensor:
    names = [block.names[r] for r in PAIR_CONSUMERS[pair]]
    for name in names:
        if name in stats:
            value = stats[name]
            return getattr(value, "absmax", value)
    raise KeyError(
        f"SmoothQuant (block {block.index} {pair}) needs the input absmax of one of {names}; collect "
        "per-channel absmax for every block linear input (dllm_calib ChannelStatsCollector or "
        "dllm_actquant.capture_inputs)"
    )


def apply_smoothquant(
    model: DiffusionLM | Topology | nn.Module,
    act_absmax: Mapping[str, Any],
    config: SmoothQuantConfig | None = None,
) -> dict[str, Tensor]:
    """Smooth every block of ``model`` in place; returns the scales ``s`` keyed by producer module name.

    ``act_absmax`` maps linear names (``Topology.linear_names()``) to per-channel input absmax ``[C]``
    (tensors or objects with ``.absmax``) collected on the float model before smoothing. Every scale is
    computed (and every statistic looked up) before the first weight changes. The float model's outputs
    are unchanged up to rounding.
    """
    config = config or SmoothQuantConfig()
    topology = as_topology(model)
    check_transformable(topology, "SmoothQuant")
    # Scales from the unedited weights are those a sequential pass in SMOOTH_PAIRS order would compute:
    # a norm fold scales the columns of v / up, while the v -> o and up -> down scales read o and down only.
    plan = [
        (b, pair, pair_scales(b, pair, _absmax(act_absmax, b, pair), config.alpha_for(pair)))
        for b in topology
        for pair in SMOOTH_PAIRS
        if pair in config.pairs
    ]
    for b, pair, s in plan:
        fold_pair_scale(topology, b, pair, s)
    return {b.names[_PRODUCER[pair]]: s for b, pair, s in plan}
