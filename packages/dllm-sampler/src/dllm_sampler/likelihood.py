"""Monte-Carlo ELBO estimates of ``log p(target | prefix)`` for masked diffusion LMs.

Both estimators repeat ``[prefix | target]`` ``batch_size`` times, mask target positions only, and average
``sum_masked CE / p_mask`` (a bound on the negative log-likelihood) over ``mc_num`` noisy copies:

- ``"llada"`` (LLaDA's ``get_log_likelihood``): draw ``k ~ U{1..Lt}``; row ``j`` of a batch of ``b`` masks
  exactly ``counts[j]`` random target positions, ``counts = round(linspace(k, k + (b - 1) Lt / b, b))``
  wrapped into ``1..Lt``, and ``p_mask = counts / Lt`` (stratified over the batch).
- ``"dream"`` (Dream's harness, ``log_type="ftb"``): ``u0 ~ U(0, 1)``, ``t_j = (u0 + j / b) mod 1``,
  ``p_mask = (1 - 1e-3) t + 1e-3`` and each target token is masked i.i.d. with it; the first and the last
  position of the whole sequence are never masked (so the last target token is never scored).

The model's logits are taken as they come (Dream's shift is the adapter's job).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from .models.spec import arch_spec
from .step import MaskPredictor

__all__ = [
    "dream_likelihood_noise",
    "elbo_nll_per_token",
    "llada_likelihood_noise",
    "llada_mask_counts",
    "log_likelihood",
]

Estimator = Literal["llada", "dream"]


def llada_mask_counts(k: int, target_len: int, batch: int) -> torch.Tensor:
    """LLaDA's stratified number of masked target tokens per row.

    Args:
        k: the random start, in ``1..target_len``.
        target_len: ``Lt``.
        batch: ``b``, rows in the batch.

    Returns:
        ``[b]`` int64 in ``1..Lt``: ``((round(linspace(k, k + (b - 1) Lt / b, b)) - 1) mod Lt) + 1``.
        Row ``j`` is ``k + j Lt / b`` rounded half to even, computed in exact integer arithmetic so
        ties (``j Lt / b`` ending in .5) do not depend on float rounding.
    """
    if not 1 <= k <= target_len:
        raise ValueError(f"k must be in 1..{target_len}, got {k}")
    numerator = k * batch + torch.arange(batch, dtype=torch.int64) * target_len
    quotient, remainder = numerator // batch, numerator % batch
    round_up = (2 * remainder > batch) | ((2 * remainder == batch) & (quotient % 2 == 1))
    counts = quotient + round_up.long()
    return (counts - 1) % target_len + 1


def llada_likelihood_noise(
    seq: torch.Tensor, prefix_len: int, mask_token_id: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise a ``[b, L]`` batch of copies of one sequence with LLaDA's stratified estimator.

    Returns:
        ``(noisy [b, L], masked [b, L] bool, p_mask [b, 1] float32)``; row ``j`` masks exactly
        ``llada_mask_counts(k, Lt, b)[j]`` uniformly chosen target positions.
    """
    b, l = seq.shape
    target_len = l - prefix_len
    k = int(torch.randint(1, target_len + 1, (1,), generator=generator, device=seq.device))
    counts = llada_mask_counts(k, target_len, b).to(seq.device)
    # A uniformly random subset of size counts[j]: the positions whose random rank is below counts[j].
    ranks = torch.rand(b, target_len, device=seq.device, generator=generator).argsort(dim=1).argsort(dim=1)
    masked = torch.zeros(b, l, dtype=torch.bool, device=seq.device)
    masked[:, prefix_len:] = ranks < counts.unsqueeze(1)
    noisy = seq.masked_fill(masked, mask_token_id)
    return noisy, masked, (counts.float() / target_len).unsqueeze(1)


def dream_likelihood_noise(
    seq: torch.Tensor,
    prefix_len: int,
    mask_token_id: int,
    eps: float = 1e-3,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise a ``[b, L]`` batch of copies of one sequence with Dream's stratified-time estimator.

    Returns:
        ``(noisy [b, L], masked [b, L] bool, p_mask [b, 1] float32)`` with ``t_j = (u0 + j / b) mod 1``,
        ``p_mask = (1 - eps) t + eps``; only target positions are masked, never position 0 or ``L - 1``.
    """
    b, l = seq.shape
    u0 = torch.rand(1, device=seq.device, generator=generator)
    t = (u0 + torch.arange(b, device=seq.device, dtype=torch.float32) / b) % 1
    p_mask = ((1 - eps) * t + eps).unsqueeze(1)
    masked = torch.rand(b, l, device=seq.device, generator=generator) < p_mask
    masked[:, 0] = False
    masked[:, -1] = False
    masked[:, :prefix_len] = False
    return seq.masked_fill(masked, mask_token_id), masked, p_mask


_NOISE: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {
    "llada": llada_likelihood_noise,
    "dream": dream_likelihood_noise,
}
"""Estimator name -> its noise function ``(seq [b, L], prefix_len, mask_token_id, generator=)`` ->
``(noisy [b, L], masked [b, L] bool, p_mask [b, 1])``."""


@torch.no_grad()
def log_likelihood(
    model: MaskPredictor,
    prefix: torch.Tensor,
    target: torch.Tensor,
    mc_num: int = 128,
    batch_size: int = 32,
    estimator: Estimator | None = None,
    generator: torch.Generator | None = None,
    cfg_scale: float = 0.0,
) -> float:
    """Monte-Carlo ELBO estimate of ``log p(target | prefix)`` in nats (a lower bound; higher is better).

    Args:
        model: a `MaskPredictor`.
        prefix: ``[Lp]`` token ids (may be empty).
        target: ``[Lt]`` token ids, ``Lt >= 1``.
        mc_num: number of noisy copies; rows per model call are ``b = min(batch_size, mc_num)`` and ``mc_num``
            must be a multiple of ``b`` (``mc_num=1`` gives a single one-row call, as for MMLU).
        batch_size: rows per model call.
        estimator: ``"llada"``, ``"dream"`` or None for ``model.arch``'s (`ArchSpec.likelihood_estimator`).
        generator: torch generator on the model's device, for reproducible estimates.
        cfg_scale: LLaDA-style unsupervised CFG ``un + (w + 1) (cond - un)``, the prefix masked in ``un``;
            0 disables it.

    Returns:
        ``-mean over copies of sum_masked CE / p_mask``.
    """
    estimator = estimator or arch_spec(model.arch).likelihood_estimator
    if estimator not in _NOISE:
        names = " or ".join(f'"{name}"' for name in _NOISE)
        raise ValueError(f"estimator must be {names} (or None to use model.arch), got {estimator!r}")
    noise = _NOISE[estimator]
    if prefix.dim() != 1 or target.dim() != 1:
        raise ValueError(
            "prefix and target must be 1-D token ids, "
            f"got shapes {tuple(prefix.shape)}, {tuple(target.shape)}"
        )
    if target.numel() == 0:
        raise ValueError("target is empty; its log-likelihood is 0 by definition")
    if mc_num < 1 or batch_size < 1:
        raise ValueError(f"mc_num and batch_size must be >= 1, got {mc_num}, {batch_size}")
    b = min(batch_size, mc_num)
    if mc_num % b != 0:
        raise ValueError(
            f"mc_num ({mc_num}) must be a multiple of batch_size ({b}); e.g. batch_size={mc_num}"
        )
    if cfg_scale < 0:
        raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}")

    prefix_len = prefix.numel()
    seq = torch.cat([prefix.to(target.device).long(), target.long()]).unsqueeze(0).repeat(b, 1)
    mask_id = model.mask_token_id
    total = torch.zeros((), dtype=torch.float64, device=seq.device)
    for _ in range(mc_num // b):
        noisy, masked, p_mask = noise(seq, prefix_len, mask_id, generator=generator)
        if cfg_scale > 0:
            un = noisy.clone()
            un[:, :prefix_len] = mask_id
            cond_logits, un_logits = model.logits(torch.cat([noisy, un]), None).chunk(2, dim=0)
            logits = un_logits + (cfg_scale + 1) * (cond_logits - un_logits)
        else:
            logits = model.logits(noisy, None)
        ce = F.cross_entropy(logits[masked].float(), seq[masked], reduction="none")
        total += (ce / p_mask.expand_as(masked)[masked]).sum().double() / b
    return -(total / (mc_num // b)).item()


def elbo_nll_per_token(
    model: MaskPredictor,
    sequences: Iterable[torch.Tensor] | torch.Tensor,
    mc_num: int = 128,
    batch_size: int = 32,
    prefix_lengths: Sequence[int] | None = None,
    estimator: Estimator | None = None,
    generator: torch.Generator | None = None,
) -> float:
    """ELBO negative log-likelihood per target token (nats/token) over a set of sequences.

    ``sum_i -log_likelihood(seq_i[:p_i], seq_i[p_i:]) / sum_i (len(seq_i) - p_i)``. With no prefix
    (``prefix_lengths=None``, the default) the whole sequence is the target. With the Dream estimator the
    first and last positions are never masked, so those tokens add nothing to the numerator while still
    counting in the denominator; compare numbers from the same estimator only.

    Args:
        model: a `MaskPredictor`.
        sequences: 1-D token-id tensors (or the rows of a ``[N, L]`` tensor).
        mc_num, batch_size, estimator, generator: as in `log_likelihood`.
        prefix_lengths: per sequence, how many leading tokens are conditioning context; None = all 0.

    Returns:
        nats per target token.
    """
    sequences = list(sequences)
    if not sequences:
        raise ValueError("sequences is empty")
    lengths = [0] * len(sequences) if prefix_lengths is None else list(prefix_lengths)
    if len(lengths) != len(sequences):
        raise ValueError(f"got {len(lengths)} prefix_lengths for {len(sequences)} sequences")
    nll, tokens = 0.0, 0
    for seq, p in zip(sequences, lengths, strict=True):
        if not 0 <= p < seq.numel():
            raise ValueError(f"prefix length {p} must be in [0, {seq.numel()}) for a sequence of that length")
        nll -= log_likelihood(model, seq[:p], seq[p:], mc_num, batch_size, estimator, generator)
        tokens += seq.numel() - p
    return nll / tokens
