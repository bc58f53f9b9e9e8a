"""SmoothQuant: move activation outliers into the weights with per-channel scales folded via the topology.

For a producer -> consumers pair with activation ``X`` (the consumers' shared input) and consumer weights
``W_i``, channel ``j`` gets ``s_j = max|X_j|^alpha / max_i max|W_i[:, j]|^(1 - alpha)``; the producer's output
is divided by ``s`` and the consumers' input columns multiplied by ``s`` (``dllm_sampler.Topology`` folds:
``fold_norm_scale``, ``fold_vo_scale``, ``fold_up_down_scale``), so the float model is unchanged. Pairs:

* ``attn_norm -> q, k, v`` and ``mlp_norm -> gate, up`` (always);
* ``v -> o`` (``SmoothQuantConfig.vo``): only for multi-head attention. With grouped-query attention
  (Dream) one v channel feeds several o columns, and the QDLM/AutoAWQ convention is to skip it; this is
  detected and logged;
* ``up -> down`` (``SmoothQuantConfig.up_down``).

A channel whose activation or weight range is zero keeps ``s = 1``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from dllm_calib import MethodConfig
from dllm_sampler import BlockTopology, DiffusionLM, Topology
from torch import Tensor, nn

from dllm_actquant.modules import as_topology, check_transformable

__all__ = ["SmoothQuantConfig", "apply_smoothquant", "smoothquant_scales"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmoothQuantConfig(MethodConfig):
    """SmoothQuant settings.

    Attributes:
        alpha: migration strength in [0, 1] (0: no activation change; 0.5: equal ranges; 1: all to weights).
        vo: also smooth ``v -> o`` (multi-head attention only; skipped with a log line under GQA).
        up_down: also smooth ``up -> down`` (the down-projection input).
    """

    alpha: float = 0.5
    vo: bool = False
    up_down: bool = False

    def validate(self) -> None:
        if not (isinstance(self.alpha, int | float) and 0.0 <= self.alpha <= 1.0):
            raise ValueError(f"SmoothQuantConfig.alpha must be in [0, 1], got {self.alpha!r}")
        for flag in ("vo", "up_down"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"SmoothQuantConfig.{flag} must be a bool, got {getattr(self, flag)!r}")


def smoothquant_scales(act_absmax: Tensor, weights: Sequence[Tensor], alpha: float) -> Tensor:
    """``s [C]`` float64 (CPU) from the activation absmax ``[C]`` and consumer weights ``[out_i, C]``."""
    a = torch.as_tensor(act_absmax).detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    w = torch.stack([wi.detach().abs().to(torch.float64).amax(0).cpu() for wi in weights]).amax(0)
    if a.shape != w.shape:
        raise ValueError(
            f"activation absmax has {a.numel()} channels but the weights have {w.numel()} inputs"
        )
    if not bool(torch.isfinite(a).all()):
        raise ValueError("activation absmax holds NaN/Inf; recollect the statistics")
    live = (a > 0) & (w > 0)
    s = torch.ones_like(a)
    s[live] = a[live].pow(alpha) / w[live].pow(1.0 - alpha)
    return s


def _absmax(stats: Mapping[str, Any], names: Sequence[str], what: str) -> Tensor:
    for name in names:
        if name in stats:
            value = stats[name]
            return getattr(value, "absmax", value)
    raise KeyError(
        f"SmoothQuant ({what}) needs the input absmax of one of {list(names)}; collect per-channel absmax "
        "for "
        "every block linear input (dllm_calib ChannelStatsCollector or dllm_actquant.capture_inputs)"
    )


def _weights(mods: Sequence[nn.Module]) -> list[Tensor]:
    return [m.weight for m in mods]  # type: ignore[misc]


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
    blocks: list[BlockTopology] = list(topology)
    gqa = [b.index for b in blocks if b.n_kv_heads != b.n_heads]
    if config.vo and gqa:
        b = blocks[gqa[0]]
        logger.warning(
            "SmoothQuant: skipping v -> o smoothing in %d block(s): grouped-query attention (%d query heads, "
            "%d kv heads) makes one v channel feed %d o columns",
            len(gqa),
            b.n_heads,
            b.n_kv_heads,
            b.gqa_groups,
        )
    # (block, fold kind, producer name, s); the norm folds and the v/up folds touch disjoint weight axes, so
    # scales from the unedited weights are the ones a sequential pass would compute
    plan: list[tuple[BlockTopology, str, str, Tensor]] = []
    for b in blocks:
        for which, roles in (("attn", ("q", "k", "v")), ("mlp", ("gate", "up"))):
            _, consumers = b.norm_consumers(which)
            a = _absmax(act_absmax, [b.names[r] for r in roles], f"block {b.index} {which}")
            plan.append(
                (b, which, b.names[f"{which}_norm"], smoothquant_scales(a, _weights(consumers), config.alpha))
            )
        if config.vo and b.index not in gqa:
            a = _absmax(act_absmax, [b.names["o"]], f"block {b.index} v->o")
            plan.append((b, "vo", b.names["v"], smoothquant_scales(a, [b.o_proj.weight], config.alpha)))
        if config.up_down:
            a = _absmax(act_absmax, [b.names["down"]], f"block {b.index} up->down")
            plan.append(
                (b, "up_down", b.names["up"], smoothquant_scales(a, [b.down_proj.weight], config.alpha))
            )
    for b, kind, _, s in plan:
        if kind in ("attn", "mlp"):
            topology.fold_norm_scale(b, kind, s)
        elif kind == "vo":
            topology.fold_vo_scale(b, s)
        else:
            topology.fold_up_down_scale(b, s)
    return {name: s for _, _, name, s in plan}
