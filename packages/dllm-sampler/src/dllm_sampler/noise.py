"""LLaDA's forward (noising) process and training loss (GUIDELINES.md of ML-GSAI/LLaDA).

Each sequence gets a time ``t`` in [0, 1]; every token is masked independently with probability
``p_mask = (1 - eps) * t + eps``; prompt tokens (SFT) are never masked. The loss is the cross-entropy on the
masked tokens weighted by ``1 / p_mask`` (an upper bound of the negative log-likelihood).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["forward_noise", "llada_loss"]


def forward_noise(
    x0: torch.Tensor,
    t: float | torch.Tensor,
    mask_token_id: int,
    prompt_mask: torch.Tensor | None = None,
    eps: float = 1e-3,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask a clean batch with LLaDA's process.

    Args:
        x0: ``[B, L]`` clean token ids.
        t: time in [0, 1]: a float for the whole batch, or ``[B]`` / ``[B, 1]`` per sequence
            (pre-training draws ``t ~ U(0, 1)`` per sequence).
        mask_token_id: id written at masked positions.
        prompt_mask: optional ``[B, L]`` (or ``[L]``) bool, True on prompt tokens, which are never masked.
        eps: floor of the masking probability.
        generator: optional torch generator on ``x0``'s device.

    Returns:
        ``(noisy [B, L] long, masked [B, L] bool, p_mask [B, 1] float32)`` with
        ``p_mask = (1 - eps) * t + eps`` and ``masked ~ Bernoulli(p_mask)`` i.i.d. outside the prompt.
    """
    if x0.dim() != 2:
        raise ValueError(f"x0 must be [B, L] token ids, got shape {tuple(x0.shape)}")
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must be in [0, 1), got {eps}")
    b, l = x0.shape
    t = torch.as_tensor(t, dtype=torch.float32, device=x0.device)
    if t.numel() == 1:
        t = t.reshape(1, 1).expand(b, 1)
    elif t.numel() == b:
        t = t.reshape(b, 1)
    else:
        raise ValueError(
            f"t must be a scalar or hold one value per sequence ({b}), got shape {tuple(t.shape)}"
        )
    if bool(((t < 0) | (t > 1)).any()):
        raise ValueError("t must lie in [0, 1]")
    p_mask = (1 - eps) * t + eps
    masked = torch.rand(b, l, device=x0.device, generator=generator) < p_mask
    if prompt_mask is not None:
        masked &= ~prompt_mask.to(device=x0.device, dtype=torch.bool).expand(b, l)
    noisy = torch.where(masked, torch.full_like(x0, mask_token_id), x0)
    return noisy, masked, p_mask


def llada_loss(
    logits: torch.Tensor,
    x0: torch.Tensor,
    masked: torch.Tensor,
    p_mask: torch.Tensor,
    normalize: Literal["tokens", "answer"] = "tokens",
    prompt_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """LLaDA's importance-weighted masked cross-entropy (a scalar, in nats).

    Args:
        logits: ``[B, L, V]`` model logits on the noisy batch.
        x0: ``[B, L]`` clean token ids (the targets).
        masked: ``[B, L]`` bool, positions that were masked.
        p_mask: ``[B, 1]`` or ``[B, L]`` masking probability of each sequence/position.
        normalize: ``"tokens"`` (pre-training): ``sum_masked CE / p_mask / (B * L)``.
            ``"answer"`` (SFT): ``sum_masked CE / p_mask / answer_length(row) / B``, where the answer length
            is the number of non-prompt tokens of the row (EOS padding counts as answer).
        prompt_mask: ``[B, L]`` bool, required for ``normalize="answer"``.
    """
    b, l = x0.shape
    p = p_mask.expand(b, l)[masked].float()
    ce = F.cross_entropy(logits[masked].float(), x0[masked], reduction="none") / p
    if normalize == "tokens":
        return ce.sum() / (b * l)
    if normalize == "answer":
        if prompt_mask is None:
            raise ValueError('normalize="answer" needs prompt_mask to compute each row\'s answer length')
        answer_len = (~prompt_mask.bool()).sum(dim=1, keepdim=True).clamp(min=1).expand(b, l)
        return (ce / answer_len[masked]).sum() / b
    raise ValueError(f'normalize must be "tokens" or "answer", got {normalize!r}')
