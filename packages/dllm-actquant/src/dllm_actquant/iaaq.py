"""IA-AQ (DLLMQuant): search V's quantization parameters against the attention-weighted error.

For a layer with attention probabilities ``P [H, L, L]`` (query rows, key columns) and values ``V`` (kv head
``j = h // G`` serves query head ``h``), the error of a V quantizer is

    L = sum_states sum_h || P_h (V_hat_j(h) - V_j(h)) ||_F^2

so a token's quantization error counts as much as the other tokens attend to it (bidirectional attention
makes every token a potential reader). The candidate parameters are the min-max grid shrunk by a clip
factor ``alpha`` from a grid (DLLMQuant: {1.0, 0.8}; extendable), chosen per kv head (the loss separates
over kv heads). Static ranges (``"head"``, ``"channel"``) come from a first pass over the calibration
states; the loss pass streams ``P`` from ``dllm_calib.AttentionCollector`` (never storing it), so memory
does not grow with the number of states. ``weighted=False`` gives the plain ``||V_hat - V||^2`` ablation.
Calibrate on DLLMQuant's TMAS states (``dllm_calib.build_tmas``), before attaching any V quantizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from dllm_calib import (
    AttentionCollector,
    AttentionSite,
    Batch,
    Collector,
    Feed,
    HookPoint,
    MethodConfig,
    collect,
)
from dllm_sampler import DiffusionLM, model_rope
from torch import Tensor

from dllm_actquant.vquant import VQuantConfig, VQuantParams, fake_quantize_v

__all__ = [
    "IAAQAccumulator",
    "IAAQConfig",
    "IAAQResult",
    "VOutputCollector",
    "calibrate_iaaq",
    "search_v_quant",
]


@dataclass(frozen=True)
class IAAQConfig(MethodConfig):
    """IA-AQ settings.

    Attributes:
        vquant: the V quantizer whose parameters are searched.
        alphas: clip-factor grid, each in (0, 1] (DLLMQuant: 1.0 and 0.8).
        weighted: weight the error by the attention probabilities (IA-AQ); False for plain MSE.
    """

    vquant: VQuantConfig = field(default_factory=VQuantConfig)
    alphas: tuple[float, ...] = (1.0, 0.8)
    weighted: bool = True

    def validate(self) -> None:
        a = self.alphas
        if (
            not a
            or len(set(a)) != len(a)
            or not all(isinstance(x, int | float) and 0.0 < x <= 1.0 for x in a)
        ):
            raise ValueError(f"IAAQConfig.alphas must be distinct numbers in (0, 1], got {a!r}")
        if not isinstance(self.weighted, bool):
            raise ValueError(f"IAAQConfig.weighted must be a bool, got {self.weighted!r}")


@dataclass
class IAAQResult:
    """One layer: the chosen `VQuantParams` and ``losses [len(alphas), K]`` (float64, candidate x kv head)."""

    params: VQuantParams
    losses: Tensor
    alphas: tuple[float, ...]


class IAAQAccumulator:
    """Streams one layer's statistics: ``observe_range`` (first pass, static granularities), then
    ``observe_loss`` (second pass); ``result()`` picks the best alpha per kv head."""

    def __init__(self, num_kv_heads: int, head_dim: int, config: IAAQConfig) -> None:
        self.k, self.dh, self.config = num_kv_heads, head_dim, config
        self.lo: Tensor | None = None
        self.hi: Tensor | None = None
        self.losses = torch.zeros(len(config.alphas), num_kv_heads, dtype=torch.float64)
        self.tokens = 0

    def _heads(self, v: Tensor) -> Tensor:
        if v.shape[-1] != self.k * self.dh:
            raise ValueError(
                f"expected V [..., {self.k * self.dh}] ({self.k} kv heads x {self.dh}), got {tuple(v.shape)}"
            )
        return v.reshape(*v.shape[:-1], self.k, self.dh)

    def observe_range(self, v: Tensor, mask: Tensor | None = None) -> None:
        """Update the static ranges with ``v [B, L, K*Dh]`` on real tokens (``mask [B, L]`` bool)."""
        x = self._heads(v).float()
        x = x.reshape(-1, self.k, self.dh) if mask is None else x[mask.to(torch.bool)]
        if x.shape[0] == 0:
            return
        dims = (0, 2) if self.config.vquant.granularity == "head" else (0,)
        lo, hi = x.amin(dims).cpu().double(), x.amax(dims).cpu().double()
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)

    def _params(self, alpha: float) -> VQuantParams:
        return VQuantParams(alpha=torch.full((self.k,), float(alpha)), lo=self.lo, hi=self.hi)

    def observe_loss(self, v: Tensor, p: Tensor | None, mask: Tensor | None = None) -> None:
        """Add each candidate's error on ``v [B, L, K*Dh]`` weighted by ``p [B, H, L, L]`` (None: plain)."""
        if self.config.vquant.static and self.lo is None:
            raise RuntimeError("static V granularity: run observe_range over the calibration states first")
        if self.config.weighted and p is None:
            raise ValueError("weighted IA-AQ needs the attention probabilities p")
        x = self._heads(v)
        keep = None if mask is None else mask.to(device=v.device, dtype=torch.bool)
        for i, alpha in enumerate(self.config.alphas):
            vq = fake_quantize_v(v, self._params(alpha), self.config.vquant, self.k)
            err = self._heads(vq).float() - x.float()  # [B, L, K, Dh]
            if keep is not None:
                err = err * keep[..., None, None]
            if self.config.weighted:
                assert p is not None
                h = p.shape[1]
                if h % self.k:
                    raise ValueError(f"{h} query heads are not a multiple of {self.k} kv heads")
                per_head = err.permute(0, 2, 1, 3).repeat_interleave(h // self.k, dim=1)  # [B, H, L, Dh]
                pe = p.to(per_head.dtype) @ per_head
                loss = pe.double().pow(2).sum((0, 2, 3)).view(self.k, h // self.k).sum(1)
            else:
                loss = err.double().pow(2).sum((0, 1, 3))
            self.losses[i] += loss.cpu()
        self.tokens += int(x.shape[0] * x.shape[1] if keep is None else keep.sum())

    def result(self) -> IAAQResult:
        """The best alpha per kv head (the first grid entry on ties)."""
        if self.tokens == 0:
            raise RuntimeError("IA-AQ saw no calibration token for this layer")
        best = self.losses.argmin(0)
        alpha = torch.tensor([self.config.alphas[int(i)] for i in best], dtype=torch.float64)
        params = VQuantParams(alpha=alpha, lo=self.lo, hi=self.hi)
        return IAAQResult(params=params, losses=self.losses.clone(), alphas=self.config.alphas)


def search_v_quant(
    v: Tensor, p: Tensor | None, config: IAAQConfig, num_kv_heads: int, mask: Tensor | None = None
) -> IAAQResult:
    """IA-AQ on in-memory tensors: ``v [N, L, K*Dh]``, ``p [N, H, L, L]`` (None iff not weighted) and an
    optional real-token ``mask [N, L]``."""
    if v.dim() != 3 or v.shape[-1] % num_kv_heads:
        raise ValueError(f"v must be [N, L, K*Dh] with K={num_kv_heads}, got {tuple(v.shape)}")
    acc = IAAQAccumulator(num_kv_heads, v.shape[-1] // num_kv_heads, config)
    if config.vquant.static:
        acc.observe_range(v, mask)
    acc.observe_loss(v, p, mask)
    return acc.result()


class VOutputCollector(Collector):
    """Feeds each observed v output to its layer's accumulator: ranges (first pass) or losses (second pass).

    In the weighted loss pass a layer's V and its P (from `AttentionCollector`'s ``on_probs``, which may
    fire before or after v runs) are paired whichever comes second, then both are released.
    """

    def __init__(self, accs: dict[str, IAAQAccumulator], mode: str, weighted: bool) -> None:
        self.accs, self.mode, self.weighted = accs, mode, weighted
        self.name = f"iaaq_v_{mode}"
        self.v: dict[str, Tensor] = {}
        self.p: dict[str, Tensor] = {}

    def hook_points(self, targets: Sequence[str]) -> list[HookPoint]:
        return [HookPoint(name, "output") for name in self.accs]

    def begin_batch(self, batch: Batch) -> None:
        self.v, self.p = {}, {}

    def observe(self, point: HookPoint, tensor: Tensor, batch: Batch) -> None:
        acc = self.accs[point.module]
        if self.mode == "range":
            acc.observe_range(tensor, batch.attention_mask)
        elif not self.weighted:
            acc.observe_loss(tensor, None, batch.attention_mask)
        elif point.module in self.p:
            acc.observe_loss(tensor, self.p.pop(point.module), batch.attention_mask)
        else:
            self.v[point.module] = tensor

    def on_probs(self, site: str, batch: Batch, p: Tensor) -> None:
        """``AttentionCollector`` callback; sites are named after their layer's v module."""
        if site in self.v:
            self.accs[site].observe_loss(self.v.pop(site), p, batch.attention_mask)
        else:
            self.p[site] = p

    def end_batch(self, batch: Batch) -> None:
        unpaired = sorted(set(self.v) | set(self.p))
        self.v, self.p = {}, {}
        if unpaired:
            raise RuntimeError(
                f"IA-AQ: layers {unpaired} produced V without attention probabilities or vice versa"
            )

    def results(self) -> dict[str, Any]:
        return {}


@torch.no_grad()
def calibrate_iaaq(
    dlm: DiffusionLM,
    feed: Feed,
    config: IAAQConfig | None = None,
    blocks: Sequence[int] | None = None,
) -> dict[int, IAAQResult]:
    """Run IA-AQ for ``blocks`` (default all) of ``dlm`` on the calibration batches of ``feed`` (a
    ``dllm_calib.ModelFeed`` for the whole model, or a feed of the unit holding those blocks); returns
    block index -> `IAAQResult`.

    Use ``{i: r.params for i, r in result.items()}`` with `attach_v_quantizers`.
    """
    config = config or IAAQConfig()
    topology = dlm.topology
    chosen = [topology.block(i) for i in blocks] if blocks is not None else list(topology)
    accs = {b.names["v"]: IAAQAccumulator(b.n_kv_heads, b.head_dim, config) for b in chosen}
    targets = [b.weight_holder("v") for b in chosen]
    if config.vquant.static:
        collect(feed, targets, [VOutputCollector(accs, "range", config.weighted)])
    vcol = VOutputCollector(accs, "loss", config.weighted)
    collectors: list[Collector] = [vcol]
    if config.weighted:
        rope = model_rope(dlm)
        sites = [
            AttentionSite(
                name=b.names["v"],
                q_proj=b.names["q"],
                k_proj=b.names["k"],
                num_heads=b.n_heads,
                num_kv_heads=b.n_kv_heads,
                head_dim=b.head_dim,
                rope=rope,
            )
            for b in chosen
        ]
        collectors.append(AttentionCollector(sites, on_probs=vcol.on_probs, name="iaaq_attention"))
    collect(feed, targets, collectors)
    return {b.index: accs[b.names["v"]].result() for b in chosen}
