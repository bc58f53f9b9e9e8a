"""Fidelity of a (quantized) model to its float reference on masked positions, per mask ratio.

The inputs are deterministic held-out rows of the tiny models' two tasks, noised with a seeded mask of an
exact size:

* ``arithmetic``: ``[bos] prompt answer eos`` rows (`dllm_sampler.tasks.sft_batch` of the first held-out
  problems); only the answer region (answer and EOS) is masked;
* ``code``: ``[bos] chunk`` rows of evenly spaced held-out stdlib chunks; the whole chunk is maskable.

At mask ratio ``r`` each row gets exactly ``max(1, round(r * n))`` of its ``n`` maskable positions masked,
chosen uniformly with a generator seeded by ``(seed, source, r)``, so the same call always sees the same
inputs, and both models see identical ones. On the masked positions the two models' next-token
distributions are compared: top-1 agreement (fraction of positions whose argmax match) and
``KL(reference || model)`` in nats per position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from dllm_sampler import DiffusionLM
from dllm_sampler.tasks import chunk_ids, heldout_problems, sft_batch
from tokenizers import Tokenizer
from torch import Tensor

__all__ = [
    "FidelityInputs",
    "FidelityRow",
    "arithmetic_inputs",
    "check_comparable",
    "code_inputs",
    "compare_logits",
    "mask_exactly",
    "mask_ratio_fidelity",
]

DEFAULT_RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)
_SOURCES = ("arithmetic", "code")
_CHUNK_ELEMENTS = 1 << 22
"""Logits per float64 chunk of `compare_logits` (32 MiB)."""


@dataclass(frozen=True)
class FidelityRow:
    """Agreement of one model with the reference on one source at one mask ratio.

    Attributes:
        source: ``"arithmetic"`` or ``"code"``.
        mask_ratio: requested fraction of each row's maskable positions that is masked.
        positions: masked positions compared (over all rows).
        top1_agreement: fraction of those positions where both models' argmax tokens are equal.
        kl: mean ``KL(reference || model)`` over those positions, nats.
    """

    source: str
    mask_ratio: float
    positions: int
    top1_agreement: float
    kl: float

    def to_dict(self) -> dict[str, str | int | float]:
        """JSON/CSV-ready fields."""
        return asdict(self)


@dataclass(frozen=True)
class FidelityInputs:
    """Clean rows of one source and where they may be masked.

    Attributes:
        source: a label (``"arithmetic"``, ``"code"``).
        ids: ``[B, L]`` int64 clean token ids.
        maskable: ``[B, L]`` bool, positions that may be masked (never padding or the first token).
        attention_mask: ``[B, L]`` int64 (0 on padding), or None when nothing is padded.
    """

    source: str
    ids: Tensor
    maskable: Tensor
    attention_mask: Tensor | None


def compare_logits(logits: Tensor, reference_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Per-position ``KL(reference || model)`` and top-1 agreement of two ``[N, V]`` logit sets.

    Returns:
        ``(kl [N] float64 in nats, agree [N] bool)`` on ``reference_logits``' device. The arithmetic runs
        in float64, ``_CHUNK_ELEMENTS`` logits at a time (bounded memory for large vocabularies);
        identical logits give exactly 0 and True. A token the reference rules out (logit ``-inf``) adds 0;
        one the model rules out but the reference does not makes the KL infinite.
    """
    if logits.shape != reference_logits.shape or logits.dim() != 2:
        raise ValueError(
            f"expected two [N, V] logit tensors of the same shape, got {tuple(logits.shape)} and "
            f"{tuple(reference_logits.shape)}"
        )
    rows = max(1, _CHUNK_ELEMENTS // max(1, logits.shape[1]))
    kls, agrees = [], []
    for start in range(0, logits.shape[0], rows):
        ref = torch.log_softmax(reference_logits[start : start + rows].double(), dim=-1)
        mod = torch.log_softmax(logits[start : start + rows].to(ref.device).double(), dim=-1)
        p = ref.exp()
        kls.append(torch.where(p > 0, p * (ref - mod), 0.0).sum(dim=-1))  # 0 log 0 = 0 for -inf logits
        agrees.append(ref.argmax(dim=-1) == mod.argmax(dim=-1))
    if not kls:
        empty = reference_logits.new_zeros(0, dtype=torch.float64)
        return empty, empty.bool()
    return torch.cat(kls), torch.cat(agrees)


def check_comparable(model: DiffusionLM, reference: DiffusionLM) -> None:
    """Raise ValueError unless the two models share vocabulary size and mask token (same tokenizer)."""
    if model.vocab_size != reference.vocab_size or model.mask_token_id != reference.mask_token_id:
        raise ValueError(
            f"cannot compare models with different vocabularies: vocab {model.vocab_size} vs "
            f"{reference.vocab_size}, mask id {model.mask_token_id} vs {reference.mask_token_id}; pass the "
            "float model the quantized one was made from as the reference"
        )


def _tokenizer(model: DiffusionLM) -> Tokenizer:
    if model.tokenizer is None:
        raise ValueError(
            "the model has no tokenizer; fidelity inputs are text: load a checkpoint folder that holds "
            "tokenizer.json"
        )
    return model.tokenizer


def arithmetic_inputs(model: DiffusionLM, n: int) -> FidelityInputs:
    """The first ``n`` held-out arithmetic problems as ``[bos] prompt | answer eos`` rows (left-padded);
    the answer region is maskable."""
    ids, prompt_mask, attention_mask = sft_batch(_tokenizer(model), heldout_problems(n))
    padded = bool((attention_mask == 0).any())
    return FidelityInputs("arithmetic", ids, ~prompt_mask, attention_mask if padded else None)


def code_inputs(model: DiffusionLM, n: int, chunk_tokens: int = 63) -> FidelityInputs:
    """``n`` evenly spaced held-out stdlib chunks of ``chunk_tokens`` tokens as ``[bos] chunk`` rows (just
    ``chunk`` when the model has no BOS token); every position but the first is maskable."""
    tokenizer = _tokenizer(model)
    chunks = chunk_ids(lambda s: tokenizer.encode(s, add_special_tokens=False).ids, "heldout", chunk_tokens)
    if not 1 <= n <= len(chunks):
        raise ValueError(
            f"code chunks must be in [1, {len(chunks)}] for {chunk_tokens}-token chunks, got {n}"
        )
    prefix = [] if model.bos_token_id is None else [model.bos_token_id]
    ids = torch.tensor([prefix + chunks[i * len(chunks) // n] for i in range(n)], dtype=torch.long)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = False
    return FidelityInputs("code", ids, maskable, None)


def mask_exactly(
    ids: Tensor, maskable: Tensor, ratio: float, mask_token_id: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Mask exactly ``max(1, round(ratio * n))`` of each row's ``n`` maskable positions, uniformly at random.

    Args:
        ids: ``[B, L]`` clean token ids.
        maskable: ``[B, L]`` bool; every row needs at least one maskable position.
        ratio: in (0, 1].
        mask_token_id: the id written at masked positions.
        generator: CPU torch generator (the draw does not depend on the tensors' device).

    Returns:
        ``(noisy [B, L] long, masked [B, L] bool)``.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"mask ratio must be in (0, 1], got {ratio}")
    counts = maskable.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("every row needs at least one maskable position")
    scores = torch.rand(ids.shape, generator=generator).to(ids.device).masked_fill(~maskable, float("inf"))
    ranks = scores.argsort(dim=1).argsort(dim=1)
    k = (counts.double() * ratio).round().long().clamp(min=1)
    masked = (ranks < k[:, None]) & maskable
    return ids.masked_fill(masked, mask_token_id), masked


def _generator(seed: int, source: str, ratio: float) -> torch.Generator:
    """A generator that depends only on ``(seed, source, ratio)``, not on which other ratios are asked."""
    offset = _SOURCES.index(source) if source in _SOURCES else len(_SOURCES)
    return torch.Generator().manual_seed(seed * 1_000_003 + offset * 100_003 + round(ratio * 10_000))


@torch.no_grad()
def _fidelity_row(
    model: DiffusionLM,
    reference: DiffusionLM,
    inputs: FidelityInputs,
    ratio: float,
    seed: int,
    batch_size: int,
) -> FidelityRow:
    noisy, masked = mask_exactly(
        inputs.ids, inputs.maskable, ratio, reference.mask_token_id, _generator(seed, inputs.source, ratio)
    )
    kl_sum, agree_sum, positions = 0.0, 0, 0
    for start in range(0, noisy.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        attn = None if inputs.attention_mask is None else inputs.attention_mask[rows]
        ref_logits = _masked_logits(reference, noisy[rows], attn, masked[rows])
        mod_logits = _masked_logits(model, noisy[rows], attn, masked[rows])
        kl, agree = compare_logits(mod_logits, ref_logits)
        kl_sum += float(kl.sum())
        agree_sum += int(agree.sum())
        positions += int(agree.numel())
    return FidelityRow(inputs.source, ratio, positions, agree_sum / positions, kl_sum / positions)


def _masked_logits(model: DiffusionLM, ids: Tensor, attention_mask: Tensor | None, masked: Tensor) -> Tensor:
    """``[N, V]`` logits of ``model`` at the ``masked`` positions of ``ids`` ``[b, L]``."""
    device = model.device
    attn = None if attention_mask is None else attention_mask.to(device)
    return model.logits(ids.to(device), attn)[masked.to(device)]


def mask_ratio_fidelity(
    model: DiffusionLM,
    reference: DiffusionLM,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    *,
    problems: int = 32,
    code_chunks: int = 16,
    chunk_tokens: int = 63,
    batch_size: int = 16,
    seed: int = 0,
) -> list[FidelityRow]:
    """Top-1 agreement and ``KL(reference || model)`` on masked positions, per source and mask ratio.

    Args:
        model: the model under test (quantized, or any `DiffusionLM` with the reference's tokenizer).
        reference: the float model.
        ratios: mask ratios in (0, 1].
        problems: held-out arithmetic rows (0 leaves the source out).
        code_chunks: held-out code chunks (0 leaves the source out).
        chunk_tokens: tokens per code chunk.
        batch_size: rows per forward pass.
        seed: masks are a function of ``(seed, source, ratio)``.

    Returns:
        One `FidelityRow` per (source, ratio): arithmetic rows first, ratios in the given order.
    """
    check_comparable(model, reference)
    if not ratios or not all(0.0 < r <= 1.0 for r in ratios):
        raise ValueError(f"ratios must be a non-empty list of mask ratios in (0, 1], got {list(ratios)}")
    if problems < 0 or code_chunks < 0 or problems + code_chunks == 0:
        raise ValueError(
            f"need problems >= 0 and code_chunks >= 0, not both 0; got {problems}, {code_chunks}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sources = []
    if problems:
        sources.append(arithmetic_inputs(reference, problems))
    if code_chunks:
        sources.append(code_inputs(reference, code_chunks, chunk_tokens))
    return [_fidelity_row(model, reference, s, float(r), seed, batch_size) for s in sources for r in ratios]
