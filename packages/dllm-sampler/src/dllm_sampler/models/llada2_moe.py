"""Mixture-of-experts layers of LLaDA2: the router, the experts and the sparse MLP.

Routing (``LLaDA2Router``), for hidden states h [N, D] with E experts in ``n_group`` groups:

1. logits = h W_r^T in float32 [N, E]; scores = sigmoid(logits) (or softmax over E).
2. The choice uses ``scores + expert_bias`` (the bias balances load; it never weights an output).
3. Group-limited top-k: a group scores the sum of its two best choice scores (sigmoid) or its best
   (softmax); the ``topk_group`` best groups stay, the experts of the others are excluded; the
   ``top_k`` best remaining experts are chosen.
4. Weights: the *unbiased* scores of the chosen experts, divided by their sum (+1e-20) when
   ``norm_topk_prob`` and top_k > 1, times ``routed_scaling_factor``.

Each expert is its own `GatedMLP` with ``gate_proj``/``up_proj``/``down_proj`` linears, so quantizers see
every expert's linears by name (``mlp.experts.{e}.gate_proj``); the forward runs the experts that received
tokens (`dllm_sampler.models.layers.experts_on`: one by one, or through the runner a quantized model
attaches). The shared expert (if any) sees every token and is added unweighted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dllm_sampler.config_llada2 import MoEDims
from dllm_sampler.models.layers import experts_on, gated_mlp

__all__ = ["GatedMLP", "LLaDA2Router", "LLaDA2SparseMoe", "Routing"]


class GatedMLP(nn.Module):
    """down_proj(silu(gate_proj(x)) * up_proj(x)), no biases: [..., D] -> [..., D]."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return gated_mlp(x, self.gate_proj, self.up_proj, self.down_proj)


class Routing(nn.Module):
    """Parameter-free site that sees each routing decision: ``forward(experts [N, k] long, weights [N, k]
    float32) -> (experts, weights)``. The identity; coverage counters and calibration hooks wrap or hook it
    (as `QKSite` does for attention)."""

    def forward(self, experts: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        return experts, weights


class LLaDA2Router(nn.Module):
    """The gate: ``weight`` [E, D] and (with ``expert_bias``) the ``expert_bias`` buffer [E] (float32,
    saved in checkpoints). ``forward(h [N, D]) -> (experts [N, k] long, weights [N, k] float32)``."""

    def __init__(self, hidden_size: int, moe: MoEDims) -> None:
        super().__init__()
        self.moe = moe
        self.weight = nn.Parameter(torch.empty(moe.num_experts, hidden_size))
        if moe.expert_bias:
            self.register_buffer("expert_bias", torch.zeros(moe.num_experts, dtype=torch.float32))
        else:
            self.expert_bias = None

    def scores(self, h: Tensor) -> Tensor:
        """Routing scores [N, E] in float32 (sigmoid or softmax of the float32 router logits)."""
        logits = F.linear(h.float(), self.weight.float())
        return logits.sigmoid() if self.moe.score_function == "sigmoid" else logits.softmax(dim=-1)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        m = self.moe
        scores = self.scores(h)
        choice = scores if self.expert_bias is None else scores + self.expert_bias.float()
        n = choice.shape[0]
        grouped = choice.view(n, m.n_group, -1)
        if m.score_function == "sigmoid":
            group_score = grouped.topk(2, dim=-1).values.sum(dim=-1)
        else:
            group_score = grouped.amax(dim=-1)
        keep = group_score.topk(m.topk_group, dim=-1, sorted=False).indices
        group_mask = torch.zeros_like(group_score, dtype=torch.bool).scatter_(1, keep, True)
        allowed = group_mask[:, :, None].expand_as(grouped).reshape(n, -1)
        experts = choice.masked_fill(~allowed, float("-inf")).topk(m.top_k, dim=-1).indices
        weights = scores.gather(1, experts)
        if m.norm_topk_prob and m.top_k > 1:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return experts, weights * m.routed_scaling_factor

    def extra_repr(self) -> str:
        m = self.moe
        return (
            f"experts={m.num_experts}, top_k={m.top_k}, groups={m.topk_group}/{m.n_group}, "
            f"score={m.score_function}, scale={m.routed_scaling_factor}"
        )


class LLaDA2SparseMoe(nn.Module):
    """``gate`` (`LLaDA2Router`), ``experts`` (ModuleList of `GatedMLP`), ``routing`` (`Routing` site) and
    optional ``shared_experts``: x [B, L, D] -> [B, L, D]."""

    def __init__(self, hidden_size: int, moe: MoEDims) -> None:
        super().__init__()
        self.gate = LLaDA2Router(hidden_size, moe)
        self.routing = Routing()
        self.experts = nn.ModuleList(
            GatedMLP(hidden_size, moe.expert_intermediate_size) for _ in range(moe.num_experts)
        )
        if moe.shared_intermediate_size:
            self.shared_experts: GatedMLP | None = GatedMLP(hidden_size, moe.shared_intermediate_size)
        else:
            self.shared_experts = None

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        h = x.reshape(-1, shape[-1])
        experts, weights = self.routing(*self.gate(h))
        out = torch.zeros(h.shape, dtype=torch.float32, device=h.device)
        hit = torch.bincount(experts.flatten(), minlength=len(self.experts)).tolist()
        ids = [e for e, count in enumerate(hit) if count]
        picks = [torch.nonzero(experts == e, as_tuple=True) for e in ids]
        ys = experts_on([h[token] for token, _ in picks], self.experts, ids)
        for (token, slot), y in zip(picks, ys, strict=True):
            out.index_add_(0, token, y.float() * weights[token, slot, None])
        y = out.to(x.dtype).view(shape)
        if self.shared_experts is not None:
            y = y + self.shared_experts(x)
        return y
