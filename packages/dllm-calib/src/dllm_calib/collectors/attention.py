"""Attention probabilities of chosen layers, recomputed from the q/k projections (for IA-AQ).

SDPA never materialises ``P = softmax(Q K^T / sqrt(Dh))``, so the collector hooks the *outputs* of a layer's
``q_proj`` and ``k_proj``, reshapes them to heads, applies the model's RoPE (the site's ``rope``), repeats
key heads for grouped-query attention (key head ``j`` serves query heads ``j*G .. (j+1)*G - 1``), and
recomputes ``P`` in float32 with padded keys excluded (padded query rows are zeroed). The attention is
bidirectional (no causal mask), as in LLaDA and Dream. Positions are ``cumsum(attention_mask) - 1``.

What it keeps, per site and state ``i`` (``H`` query heads, ``L_i`` tokens):

- ``importance[i]``: ``[H, L_i]`` attention *received* by each key token, ``sum_q P[h, q, k]`` (IA-AQ's
  token importance: how much the other tokens read from token ``k``);
- ``probs[i]``: ``[H, L_i, L_i]`` the probabilities themselves, only with ``keep_probs=True`` (memory grows
  with the number of states);
- ``on_probs(site_name, batch, P)`` is called with every batch's ``P`` ``[B, H, L, L]`` for consumers that
  stream their own statistic (e.g. an IA-AQ loss ``||P (V_hat - V)||^2``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from dllm_sampler import DiffusionLM, RopeFn, model_rope
from torch import Tensor

from dllm_calib.batching import Batch
from dllm_calib.buckets import bucket_of
from dllm_calib.collectors.base import Collector, HookPoint

__all__ = [
    "AttentionCollector",
    "AttentionResult",
    "AttentionSite",
    "attention_probs",
    "attention_sites",
]


@dataclass(frozen=True)
class AttentionSite:
    """One attention layer to observe.

    Attributes:
        name: a label for the results (e.g. the block's module name).
        q_proj, k_proj: module names of the query and key projections.
        num_heads, num_kv_heads, head_dim: ``H``, ``K`` (``H % K == 0``) and ``Dh``.
        rope: the model's rotary embedding, None for a model without one.
    """

    name: str
    q_proj: str
    k_proj: str
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope: RopeFn | None = None

    def __post_init__(self) -> None:
        if min(self.num_heads, self.num_kv_heads, self.head_dim) < 1 or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"site {self.name!r}: need positive head counts with num_heads ({self.num_heads}) a "
                "multiple of "
                f"num_kv_heads ({self.num_kv_heads}), and head_dim >= 1 (got {self.head_dim})"
            )


def attention_sites(
    model: DiffusionLM, rope: RopeFn | None = None, blocks: Sequence[int] | None = None
) -> list[AttentionSite]:
    """Sites for the attention of ``blocks`` (default all) of a ``DiffusionLM``, from ``model.topology``.

    ``rope`` must rotate exactly as the model does; by default it is the model's own
    (``dllm_sampler.model_rope``).
    """
    if rope is None:
        rope = model_rope(model)
    topo = model.topology
    chosen = range(len(topo.blocks)) if blocks is None else blocks
    sites = []
    for i in chosen:
        b = topo.blocks[i]
        sites.append(
            AttentionSite(
                name=b.names["q"].rsplit(".", 1)[0],
                q_proj=b.names["q"],
                k_proj=b.names["k"],
                num_heads=b.n_heads,
                num_kv_heads=b.n_kv_heads,
                head_dim=b.head_dim,
                rope=rope,
            )
        )
    return sites


@dataclass
class AttentionResult:
    """Per-state results of one site, keyed by state index."""

    importance: dict[int, Tensor] = field(default_factory=dict)
    probs: dict[int, Tensor] | None = None
    mask_ratio: dict[int, float] = field(default_factory=dict)


def attention_probs(q: Tensor, k: Tensor, site: AttentionSite, attention_mask: Tensor) -> Tensor:
    """``P`` ``[B, H, L, L]`` float32 from projection outputs ``q`` ``[B, L, H*Dh]``, ``k`` ``[B, L, "
    "K*Dh]``."""
    b, n, _ = q.shape
    qh = q.float().view(b, n, site.num_heads, site.head_dim).transpose(1, 2)
    kh = k.float().view(b, n, site.num_kv_heads, site.head_dim).transpose(1, 2)
    if site.rope is not None:
        positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        qh, kh = site.rope(qh, kh, positions)
        qh, kh = qh.float(), kh.float()
    if site.num_heads != site.num_kv_heads:
        kh = kh.repeat_interleave(site.num_heads // site.num_kv_heads, dim=1)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(site.head_dim)
    scores = scores.masked_fill(~attention_mask[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1) * attention_mask[:, None, :, None]


class AttentionCollector(Collector):
    """Recomputes attention probabilities of ``sites`` (see module docstring).

    Args:
        sites: the attention layers.
        keep_probs: also keep every state's full ``P`` (on CPU, ``probs_dtype``).
        on_probs: optional ``callback(site_name, batch, P [B, H, L, L])``.
        probs_dtype: dtype of kept probabilities.
        name: key of this collector's results.
    """

    def __init__(
        self,
        sites: Sequence[AttentionSite],
        keep_probs: bool = False,
        on_probs: Callable[[str, Batch, Tensor], None] | None = None,
        probs_dtype: torch.dtype = torch.float32,
        name: str = "attention",
    ) -> None:
        if not sites:
            raise ValueError("AttentionCollector needs at least one AttentionSite")
        names = [s.name for s in sites]
        if len(set(names)) != len(names):
            raise ValueError(f"attention site names must be unique, got {names}")
        self.sites = tuple(sites)
        self.keep_probs, self.on_probs, self.probs_dtype, self.name = keep_probs, on_probs, probs_dtype, name
        self._out: dict[str, Tensor] = {}
        self._done: set[str] = set()
        self._results = {s.name: AttentionResult(probs={} if keep_probs else None) for s in self.sites}

    def hook_points(self, targets: Sequence[str]) -> list[HookPoint]:
        points = {HookPoint(m, "output") for s in self.sites for m in (s.q_proj, s.k_proj)}
        return sorted(points, key=lambda p: p.module)

    def begin_batch(self, batch: Batch) -> None:
        self._out, self._done = {}, set()

    def observe(self, point: HookPoint, tensor: Tensor, batch: Batch) -> None:
        self._out[point.module] = tensor
        for site in self.sites:  # compute as soon as a site's q and k are both in, then free them
            if site.name not in self._done and site.q_proj in self._out and site.k_proj in self._out:
                self._process(site, batch)
                self._done.add(site.name)
                self._release(site)

    def _release(self, site: AttentionSite) -> None:
        """Drop the q/k outputs no pending site still needs."""
        for module in (site.q_proj, site.k_proj):
            users = [s for s in self.sites if module in (s.q_proj, s.k_proj)]
            if all(s.name in self._done for s in users):
                self._out.pop(module, None)

    def _process(self, site: AttentionSite, batch: Batch) -> None:
        p = attention_probs(self._out[site.q_proj], self._out[site.k_proj], site, batch.attention_mask)
        if self.on_probs is not None:
            self.on_probs(site.name, batch, p)
        res = self._results[site.name]
        received = p.sum(dim=2).cpu()
        for row, (i, n) in enumerate(zip(batch.indices, batch.lengths, strict=True)):
            res.importance[i] = received[row, :, :n].clone()
            res.mask_ratio[i] = float(batch.mask_ratio[row])
            if res.probs is not None:
                res.probs[i] = p[row, :, :n, :n].to(self.probs_dtype).cpu()

    def end_batch(self, batch: Batch) -> None:
        missing = [s.name for s in self.sites if s.name not in self._done]
        self._out, self._done = {}, set()
        if missing:
            raise RuntimeError(
                f"attention sites {missing}: their q/k projections did not run in the forward pass"
            )

    def results(self) -> dict[str, AttentionResult]:
        """Per site, the per-state results."""
        return self._results

    def bucket_results(self, num_buckets: int) -> dict[str, list[AttentionResult]]:
        """Per site, the per-state results split by the states' mask-ratio bucket."""
        out: dict[str, list[AttentionResult]] = {}
        for site, res in self._results.items():
            parts = [AttentionResult(probs={} if res.probs is not None else None) for _ in range(num_buckets)]
            for i, imp in res.importance.items():
                part = parts[bucket_of(res.mask_ratio[i], num_buckets)]
                part.importance[i] = imp
                part.mask_ratio[i] = res.mask_ratio[i]
                if res.probs is not None and part.probs is not None:
                    part.probs[i] = res.probs[i]
            out[site] = parts
        return out
