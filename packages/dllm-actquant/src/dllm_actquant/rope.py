"""The rotary embedding of LLaDA/Dream as a ``dllm_calib.RopeFn`` (to recompute attention probabilities).

``dllm_sampler`` applies RoPE inside its attention and does not export the helper, so this rebuilds it
from the config: ``inv_freq[j] = theta^(-2j/Dh)`` for ``j < Dh/2``, duplicated over the two halves
(``rotate_half`` layout), at positions ``cumsum(attention_mask) - 1``. Computed in float64.
"""

from __future__ import annotations

import torch
from dllm_sampler import DiffusionLM
from torch import Tensor

__all__ = ["model_rope"]


def model_rope(model: DiffusionLM):
    """``rope(q [B, H, L, Dh], k [B, K, L, Dh], positions [B, L]) -> (q, k)`` as ``model``'s attention."""
    dims = model.config.dims()
    head_dim, theta = dims.head_dim, dims.rope_theta
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dim, got {head_dim}")

    def rope(q: Tensor, k: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        exponent = torch.arange(0, head_dim, 2, device=q.device, dtype=torch.float64) / head_dim
        freqs = positions.to(torch.float64)[..., None] * (1.0 / theta**exponent)  # [B, L, Dh/2]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, L, Dh]
        cos, sin = emb.cos(), emb.sin()

        def rotate(x: Tensor) -> Tensor:
            xd = x.to(torch.float64)
            x1, x2 = xd.chunk(2, dim=-1)
            return (xd * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x.dtype)

        return rotate(q), rotate(k)

    return rope
