"""Per-step machinery shared by the masked-diffusion samplers.

- `MaskPredictor`: the duck-typed model interface the samplers and estimators need.
- `StepState`: what an ``on_step`` hook receives after every denoising step.
- Helpers used by both samplers: prompt/attention-mask checks, candidate-restricted top-k and sampling
  without replacement, the model's per-position confidence.
- What ``reference_exact`` sampling needs: the dtype the reference computes confidences in
  (`reference_dtype`), the reference's RoPE rounding while sampling (`reference_rounding`), and its
  whole-row top-k (`row_top_k`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

__all__ = ["MaskPredictor", "StepHook", "StepState"]


@runtime_checkable
class MaskPredictor(Protocol):
    """What a sampler needs from a model (``dllm_sampler.DiffusionLM`` satisfies it).

    ``logits(input_ids [B, L] long, attention_mask [B, L] or None) -> [B, L, V] float``: the prediction of
    the clean token at every position, with the architecture's conventions already applied (Dream's
    one-position shift). ``arch`` is ``"llada"`` or ``"dream"``. A model may also have ``max_positions``
    (int, the longest prompt plus answer it is made for; `DiffusionLM` has it), which the samplers check,
    and, for ``reference_exact`` sampling, ``dtype`` (the weights' dtype, in which the reference computes
    confidences; see `reference_dtype`) and ``model`` (a network with a ``rope_rounding`` attribute; see
    `reference_rounding`). `DiffusionLM` has both.
    """

    mask_token_id: int
    eos_token_id: int | None
    pad_token_id: int | None
    arch: str

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class StepState:
    """The sampler state after one denoising step, passed to ``on_step(state)``.

    All tensors are on the sampler's device and are the hook's to keep (nothing is mutated afterwards).

    Attributes:
        step: global step index, ``0 .. num_steps - 1``.
        num_steps: total number of steps of the run.
        block: semi-autoregressive block index (always 0 for Dream).
        num_blocks: number of blocks (1 for Dream).
        prompt_length: ``Lp``; the generated part is ``[:, prompt_length:]``.
        model_input: ``[B, L]`` long, the sequence the model saw at this step (before the commit).
        input_mask: ``[B, L]`` bool, ``model_input == mask_token_id``.
        tokens: ``[B, L]`` long, the sequence after this step's commit.
        mask: ``[B, L]`` bool, positions still masked after the commit.
        committed: ``[B, L]`` bool, positions unmasked by this step (``input_mask & ~mask``).
        confidence: ``[B, L]`` float32, the score the sampler ranked candidates by (LLaDA: probability of the
            proposed token, or U(0,1) for random remasking; Dream: the ``alg``'s score); ``-inf`` where a
            position was not a candidate (not masked, or after the current block), and everywhere for
            Dream's ``origin``, which ranks nothing.
        token_confidence: ``[B, L]`` float32, the model's own confidence ``max_v softmax(logits)`` at every
            masked position of ``model_input`` (independent of remasking strategy, block and temperature;
            for LLaDA with CFG, of the guided logits); ``-inf`` where ``input_mask`` is False.
        attention_mask: ``[B, L]`` the attention mask the model saw (prompt mask extended with ones), or None.
        logits: ``[B, L, V]`` the logits the step used, only when the sampler was asked for them
            (``with_logits=True``); otherwise None.
    """

    step: int
    num_steps: int
    block: int
    num_blocks: int
    prompt_length: int
    model_input: torch.Tensor
    input_mask: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor
    committed: torch.Tensor
    confidence: torch.Tensor
    token_confidence: torch.Tensor
    attention_mask: torch.Tensor | None = None
    logits: torch.Tensor | None = None

    def response_mask_ratio(self) -> torch.Tensor:
        """``[B]`` float: fraction of the generated part that was masked in ``model_input``."""
        return self.input_mask[:, self.prompt_length :].float().mean(dim=1)


StepHook = Callable[[StepState], None]
"""Signature of an ``on_step`` hook."""


def check_prompt(prompt: torch.Tensor, attention_mask: torch.Tensor | None, mask_token_id: int) -> None:
    """Validate a ``[B, Lp]`` prompt batch and its optional ``[B, Lp]`` attention mask.

    Raises:
        ValueError: wrong rank/dtype/shape, or a mask token inside the prompt (a pad id equal to the mask id
            would be read as a position to generate).
    """
    if prompt.dim() != 2:
        raise ValueError(
            f"prompt must be [B, Lp] token ids, got shape {tuple(prompt.shape)}; use prompt[None]"
        )
    if prompt.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"prompt must hold integer token ids, got dtype {prompt.dtype}")
    if bool((prompt == mask_token_id).any()):
        raise ValueError(
            f"prompt contains the mask token id {mask_token_id}; the samplers treat it as a position to "
            "generate. If it is padding, pad with a different id (e.g. the pad or EOS token) and pass "
            "attention_mask."
        )
    if attention_mask is not None and attention_mask.shape != prompt.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} must equal "
            f"prompt shape {tuple(prompt.shape)}"
        )


def check_length(model: MaskPredictor, prompt_length: int, new_tokens: int) -> None:
    """Raise ``ValueError`` when ``prompt_length + new_tokens`` exceeds the model's maximum sequence length.

    The maximum is ``model.max_positions`` when the model has one (``DiffusionLM`` does: its config's
    ``max_sequence_length`` / ``max_position_embeddings``); models without it are not checked. Positions
    past the maximum give garbage silently and make every step slower, so this runs before the first one.
    """
    limit = getattr(model, "max_positions", None)
    if limit is None or prompt_length + new_tokens <= limit:
        return
    key = getattr(model, "max_positions_key", "its maximum")
    raise ValueError(
        f"the prompt ({prompt_length} tokens) plus the tokens to generate ({new_tokens}) make "
        f"{prompt_length + new_tokens} positions, more than the model's maximum of {limit} ({key} in its "
        "config); shorten the prompt or generate fewer tokens (gen_length / max_new_tokens)"
    )


def extend_attention_mask(attention_mask: torch.Tensor | None, new_tokens: int) -> torch.Tensor | None:
    """Append ``new_tokens`` ones (the generated part is always attended) to a ``[B, Lp]`` mask."""
    if attention_mask is None:
        return None
    ones = attention_mask.new_ones(attention_mask.shape[0], new_tokens)
    return torch.cat([attention_mask, ones], dim=1)


def select_top_k(confidence: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Pick, in every row, the ``k[j]`` candidate positions with the highest confidence.

    Only candidates can be picked, even when their confidence is ``-inf``.

    Args:
        confidence: ``[B, L]`` float scores.
        candidates: ``[B, L]`` bool, the positions that may be picked.
        k: ``[B]`` int, how many to pick per row (at most the row's candidate count).

    Returns:
        ``[B, L]`` bool selection.
    """
    selected = torch.zeros_like(candidates)
    for j in range(confidence.shape[0]):
        kj = int(k[j])
        if kj == 0:
            continue
        idx = candidates[j].nonzero().squeeze(1)
        if kj > idx.numel():
            raise RuntimeError(f"row {j}: asked to commit {kj} tokens but only {idx.numel()} are masked")
        top = torch.topk(confidence[j, idx], kj).indices
        selected[j, idx[top]] = True
    return selected


def sample_without_replacement(
    scores: torch.Tensor,
    candidates: torch.Tensor,
    k: torch.Tensor,
    temperature: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``k[j]`` candidate positions per row from ``softmax(scores / temperature)`` without replacement.

    Args:
        scores: ``[B, L]`` float; candidates' scores must be finite.
        candidates: ``[B, L]`` bool.
        k: ``[B]`` int, at most the row's candidate count.
        temperature: > 0.
        generator: optional torch generator on the scores' device.

    Returns:
        ``[B, L]`` bool selection.
    """
    selected = torch.zeros_like(candidates)
    for j in range(scores.shape[0]):
        kj = int(k[j])
        if kj == 0:
            continue
        idx = candidates[j].nonzero().squeeze(1)
        probs = torch.softmax(scores[j, idx].double() / temperature, dim=-1)
        pick = torch.multinomial(probs, kj, replacement=False, generator=generator)
        selected[j, idx[pick]] = True
    return selected


def max_probability(logits: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` float32: ``max_v softmax(logits)`` where ``where`` is True, ``-inf`` elsewhere."""
    logits = logits.float()
    p = torch.exp(logits.amax(dim=-1) - torch.logsumexp(logits, dim=-1))
    return torch.where(where, p, torch.full_like(p, float("-inf")))


def reference_dtype(model: MaskPredictor, logits: torch.Tensor) -> torch.dtype:
    """The dtype the reference samplers compute confidences in: that of the reference model's logits.

    The reference models return logits in their weights' dtype, so for a half-precision ``model.dtype``
    (bfloat16, float16) it is that dtype (casting dllmq's float32 logits to it is exact: they were computed
    in it); otherwise, or when the model has no ``dtype``, it is ``logits.dtype``.
    """
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point and torch.finfo(dtype).bits < 32:
        return dtype
    return logits.dtype


@contextmanager
def reference_rounding(model: MaskPredictor, enabled: bool = True) -> Iterator[None]:
    """While the block runs, the network of ``model`` (``model.model``) applies RoPE as the reference code
    does (``rope_rounding = "reference"``: Dream rotates in bfloat16 when run in bfloat16); restored after.

    A no-op when ``enabled`` is False or the predictor has no such network (e.g. a test double).
    """
    network = getattr(model, "model", None)
    if not enabled or not hasattr(network, "rope_rounding"):
        yield
        return
    previous = network.rope_rounding
    network.rope_rounding = "reference"
    try:
        yield
    finally:
        network.rope_rounding = previous


def row_top_k(confidence: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per row, the ``k[j]`` positions ``torch.topk`` picks from the whole row (the reference's selection).

    Unlike `select_top_k`, the top-k runs over the full ``[L]`` row, non-candidates included (they hold
    ``-inf``), so exact ties break as in the reference code.

    Args:
        confidence: ``[B, L]`` scores, ``-inf`` where a position may not be picked.
        k: ``[B]`` int, how many to pick per row.

    Returns:
        ``[B, L]`` bool selection.
    """
    selected = torch.zeros(confidence.shape, dtype=torch.bool, device=confidence.device)
    for j in range(confidence.shape[0]):
        selected[j, torch.topk(confidence[j], int(k[j])).indices] = True
    return selected
