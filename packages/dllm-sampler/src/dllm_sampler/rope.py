"""The rotary position embedding of a loaded model, as a function other packages can call.

Quantization code that recomputes attention probabilities (IA-AQ, attention collectors) must rotate q and
k exactly as the model's attention does; this exposes the model's own RoPE helpers instead of copies.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from dllm_sampler.adapter import DiffusionLM
from dllm_sampler.models.layers import apply_rope, rope_tables

__all__ = ["RopeFn", "model_rope"]

RopeFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""``rope(q [B, H, L, Dh], k [B, K, L, Dh], positions [B, L] int64) -> (q, k)``."""


def model_rope(model: DiffusionLM) -> RopeFn:
    """``model``'s RoPE: ``rotate_half`` layout, the config's ``rope_theta``, computed in at least float32
    (float64 inputs stay float64), or in q's dtype while the network's ``rounds_rope()`` says so
    (``rope_rounding="reference"``, read at each call), as in the model's attention. Positions are
    ``cumsum(attention_mask) - 1`` for padded batches, the caller's to supply."""
    dims = model.config.dims()
    head_dim, theta = dims.head_dim, dims.rope_theta
    network = model.model

    def rope(q: Tensor, k: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        rounds = bool(getattr(network, "rounds_rope", lambda: False)())
        cos, sin = rope_tables(positions, head_dim, theta, q.dtype, rounds)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin)

    return rope
