"""LLaDA's reverse-process sampler (``generate`` of ML-GSAI/LLaDA), re-implemented.

The answer starts fully masked and is split into ``gen_length / block_length`` blocks decoded left to right
(semi-autoregressive; one block = plain diffusion). Each block gets ``steps / num_blocks`` steps and a linear
schedule of how many tokens to unmask per step. At every step the model predicts all positions
(Gumbel-max sampling in float64 at ``temperature > 0``, argmax at 0), each masked position of the current
block gets a confidence (probability of its proposed token, or U(0, 1) for ``random`` remasking) and the
most confident ones are committed. Committed tokens are never remasked.

With ``reference_exact`` (the default) a step computes what upstream's ``generate.py`` computes, in its
order and shapes: Gumbel noise drawn over the whole ``[B, L, V]`` logits, then U(0, 1) over ``[B, L]`` for
random remasking, so the same seed gives upstream's tokens; probabilities by ``softmax`` in the model's dtype
(bfloat16 for a bfloat16 model), guidance combined in it; the top-k over each whole row, so exact ties break
as upstream's; and the network applies RoPE as upstream's does (`reference_rounding`). Without it, the step
works on the current window only, in float32 (upstream's distribution, not its random stream).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, Self

import torch
from tqdm.auto import tqdm

from .step import (
    MaskPredictor,
    StepHook,
    StepState,
    check_length,
    check_prompt,
    extend_attention_mask,
    max_probability,
    reference_dtype,
    reference_rounding,
    row_top_k,
    select_top_k,
)

__all__ = [
    "LLADA_EOT_TOKEN_ID",
    "LLaDAGenerationConfig",
    "add_gumbel_noise",
    "generate_llada",
    "linear_transfer_schedule",
]

LLADA_EOT_TOKEN_ID = 126348
"""LLaDA's ``<|eot_id|>`` token (pass as ``eot_token_id`` with ``confidence_eos_eot_inf``)."""


@dataclass(frozen=True)
class LLaDAGenerationConfig:
    """Settings of `generate_llada` (defaults are upstream's).

    Attributes:
        steps: total denoising steps; must be a multiple of ``gen_length // block_length``.
        gen_length: number of generated tokens.
        block_length: semi-autoregressive block size; must divide ``gen_length``.
        temperature: Gumbel-max sampling temperature; 0 is greedy argmax.
        cfg_scale: unsupervised classifier-free guidance scale ``w``: ``un + (w + 1) * (cond - un)``, where
            the unconditional input has the prompt masked; 0 disables it (one model call per step).
        remasking: ``"low_confidence"`` (commit the most probable proposals) or ``"random"``.
        logits_eos_inf: forbid EOS (``model.eos_token_id``) by setting its logit to ``-inf``.
        confidence_eos_eot_inf: rank positions proposing EOS or ``eot_token_id`` last (confidence ``-inf``).
            Upstream's code has a typo here (it sets the EoT logit to -inf after sampling, so such proposals
            get confidence 0); this implements the documented intent.
        eot_token_id: end-of-turn id for ``confidence_eos_eot_inf`` (LLaDA: `LLADA_EOT_TOKEN_ID`); None
            ranks only EOS last.
        reference_exact: reproduce upstream's ``generate.py`` token for token (see the module docstring):
            its random draws (same seed, same tokens; the ``generator``, or the global RNG when None, as
            upstream's ``torch.rand``), its tie-breaking and its rounding in bfloat16. False: dllmq's
            float32 step over the current window (same distribution, other random stream). Either way
            ``confidence_eos_eot_inf`` does what upstream documents, not what its code does.
    """

    SAMPLER_NAME: ClassVar[str] = "llada"
    """Name of the sampler this config drives (as reports record it)."""
    GUIDANCE: ClassVar[bool] = True
    """The sampler has classifier-free guidance (``cfg_scale``)."""

    steps: int = 128
    gen_length: int = 128
    block_length: int = 128
    temperature: float = 0.0
    cfg_scale: float = 0.0
    remasking: Literal["low_confidence", "random"] = "low_confidence"
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False
    eot_token_id: int | None = None
    reference_exact: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "gen_length", "block_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.gen_length % self.block_length != 0:
            raise ValueError(
                f"gen_length ({self.gen_length}) must be a multiple of block_length ({self.block_length}); "
                f"e.g. block_length={self.gen_length} (one block) or a divisor of gen_length"
            )
        if self.steps % self.num_blocks != 0:
            suggestion = self.num_blocks * max(1, round(self.steps / self.num_blocks))
            raise ValueError(
                f"steps ({self.steps}) must be a multiple of the number of blocks "
                f"gen_length // block_length = {self.num_blocks}; e.g. steps={suggestion}"
            )
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {self.cfg_scale}")
        if self.remasking not in ("low_confidence", "random"):
            raise ValueError(f'remasking must be "low_confidence" or "random", got {self.remasking!r}')

    @property
    def num_blocks(self) -> int:
        """``gen_length // block_length``."""
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        """``steps // num_blocks``."""
        return self.steps // self.num_blocks

    def with_length(self, gen_length: int, steps: int) -> Self:
        """A copy that generates ``gen_length`` tokens in one block (``block_length = gen_length``) in
        ``steps`` steps."""
        return replace(self, gen_length=gen_length, steps=steps, block_length=gen_length)

    def greedy(self, length: int) -> Self:
        """LLaDA's greedy check (``suffix_greedy_prediction``): ``length`` tokens, one per step, in one
        block, argmax with low-confidence remasking; every other setting is the default, not this
        config's, except ``reference_exact`` (set ``cfg_scale`` on the result for guidance)."""
        return type(self)(
            steps=length,
            gen_length=length,
            block_length=length,
            temperature=0.0,
            remasking="low_confidence",
            reference_exact=self.reference_exact,
        )

    def sample(
        self,
        model: MaskPredictor,
        prompt: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """`generate_llada` with this config; ``kwargs`` are its ``on_step``, ``generator``, ``progress``
        and ``with_logits``. Returns ``[B, Lp + gen_length]`` long."""
        return generate_llada(model, prompt, attention_mask, self, **kwargs)


def linear_transfer_schedule(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """How many tokens each step of a block unmasks under LLaDA's linear schedule.

    Args:
        num_masked: ``[B]`` int, masked tokens in the block per row.
        steps: steps for the block.

    Returns:
        ``[B, steps]`` int64: ``n // steps`` everywhere, plus one on the first ``n % steps`` steps
        (rows sum to ``num_masked``).
    """
    num_masked = num_masked.long().reshape(-1, 1)
    base = num_masked // steps
    remainder = num_masked % steps
    step_idx = torch.arange(steps, device=num_masked.device).unsqueeze(0)
    return base + (step_idx < remainder).long()


def add_gumbel_noise(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gumbel-max perturbation: ``exp(logits) / (-log U) ** temperature`` with ``U ~ U(0, 1)``, in float64.

    ``argmax`` of the result is a sample from ``softmax(logits / temperature)``; low precision here is known
    to hurt generation quality, hence float64. ``temperature == 0`` returns ``logits`` unchanged (argmax).
    """
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    noise = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    return logits.exp() / (-torch.log(noise)) ** temperature


def _guided_logits(
    model: MaskPredictor,
    x: torch.Tensor,
    attention_mask: torch.Tensor | None,
    prompt_index: torch.Tensor,
    cfg_scale: float,
    reference_exact: bool,
) -> torch.Tensor:
    """``[B, L, V]`` logits; with CFG, conditional and prompt-masked unconditional inputs in one call.

    ``reference_exact``: in `reference_dtype` (guidance combined in it, as upstream's bfloat16 logits are).
    """
    if cfg_scale == 0:
        logits = model.logits(x, attention_mask)
        return logits.to(reference_dtype(model, logits)) if reference_exact else logits
    un_x = x.masked_fill(prompt_index, model.mask_token_id)
    both_mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask], dim=0)
    both = model.logits(torch.cat([x, un_x], dim=0), both_mask)
    if reference_exact:
        both = both.to(reference_dtype(model, both))
    cond, un = both.chunk(2, dim=0)
    return un + (cfg_scale + 1) * (cond - un)


def _reference_scores(
    logits: torch.Tensor,
    mask_index: torch.Tensor,
    end: int,
    cfg: LLaDAGenerationConfig,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Proposals and confidences as upstream's ``generate.py`` computes them.

    Draws, in this order: Gumbel noise over all of ``logits`` ``[B, L, V]`` (float64, when temperature > 0),
    then U(0, 1) over ``[B, L]`` (float32, random remasking). Probabilities by ``softmax`` in the logits'
    dtype.

    Returns:
        ``(proposal [B, L] long, confidence [B, L])``: confidence in the probabilities' dtype (float32 for
        random remasking), ``-inf`` at unmasked positions and from ``end`` on.
    """
    proposal = torch.argmax(add_gumbel_noise(logits, cfg.temperature, generator), dim=-1)
    if cfg.remasking == "low_confidence":
        probs = torch.softmax(logits, dim=-1)
        score = probs.gather(-1, proposal.unsqueeze(-1)).squeeze(-1)
    else:
        score = torch.rand(proposal.shape, device=proposal.device, generator=generator)
    score[:, end:] = float("-inf")
    return proposal, torch.where(mask_index, score, float("-inf"))


@torch.no_grad()
def generate_llada(
    model: MaskPredictor,
    prompt: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    config: LLaDAGenerationConfig | None = None,
    on_step: StepHook | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    with_logits: bool = False,
) -> torch.Tensor:
    """Sample answers with LLaDA's masked-diffusion sampler.

    Args:
        model: a `MaskPredictor`.
        prompt: ``[B, Lp]`` token ids, left-padded when rows differ in length (must not contain the mask id).
        attention_mask: ``[B, Lp]`` (1 = token, 0 = padding) or None; extended with ones over the answer.
        config: sampler settings (default `LLaDAGenerationConfig()`).
        on_step: called with a `StepState` after every step.
        generator: torch generator for Gumbel noise and random remasking (on the prompt's device).
        progress: show a tqdm bar over the steps.
        with_logits: include the step's ``[B, L, V]`` logits in `StepState` (memory-hungry).

    Returns:
        ``[B, Lp + gen_length]`` long: the prompt followed by the generated tokens.
    """
    cfg = config or LLaDAGenerationConfig()
    mask_id = model.mask_token_id
    check_prompt(prompt, attention_mask, mask_id)
    check_length(model, prompt.shape[1], cfg.gen_length)
    if (cfg.logits_eos_inf or cfg.confidence_eos_eot_inf) and model.eos_token_id is None:
        raise ValueError("logits_eos_inf / confidence_eos_eot_inf need model.eos_token_id, which is None")
    b, lp = prompt.shape
    x = torch.full((b, lp + cfg.gen_length), mask_id, dtype=torch.long, device=prompt.device)
    x[:, :lp] = prompt
    attn = extend_attention_mask(attention_mask, cfg.gen_length)
    prompt_index = x != mask_id
    step_fn = _reference_step if cfg.reference_exact else _window_step
    steps_per_block = cfg.steps_per_block

    bar = tqdm(total=cfg.steps, disable=not progress, desc="llada")
    with reference_rounding(model, cfg.reference_exact):
        for block in range(cfg.num_blocks):
            start = lp + block * cfg.block_length
            end = start + cfg.block_length
            schedule = linear_transfer_schedule((x[:, start:end] == mask_id).sum(dim=1), steps_per_block)
            for i in range(steps_per_block):
                mask_index = x == mask_id
                logits = _guided_logits(model, x, attn, prompt_index, cfg.cfg_scale, cfg.reference_exact)
                if cfg.logits_eos_inf:
                    eos = torch.tensor([model.eos_token_id], device=logits.device)
                    logits = logits.index_fill(-1, eos, float("-inf"))
                proposal, confidence, selected = step_fn(
                    model, logits, mask_index, start, end, schedule[:, i], cfg, generator
                )
                model_input = x.clone()
                x = torch.where(selected, proposal, x)
                if on_step is not None:
                    still_masked = x == mask_id
                    on_step(
                        StepState(
                            step=block * steps_per_block + i,
                            num_steps=cfg.steps,
                            block=block,
                            num_blocks=cfg.num_blocks,
                            prompt_length=lp,
                            model_input=model_input,
                            input_mask=mask_index,
                            tokens=x.clone(),
                            mask=still_masked,
                            committed=mask_index & ~still_masked,
                            confidence=confidence.float(),
                            token_confidence=max_probability(logits, mask_index),
                            attention_mask=attn,
                            logits=logits if with_logits else None,
                        )
                    )
                bar.update(1)
    bar.close()
    return x


def _banned(proposal: torch.Tensor, model: MaskPredictor, cfg: LLaDAGenerationConfig) -> torch.Tensor:
    """Where ``proposal`` is EOS or the configured EoT token (``confidence_eos_eot_inf``)."""
    banned = proposal == model.eos_token_id
    if cfg.eot_token_id is not None:
        banned |= proposal == cfg.eot_token_id
    return banned


def _reference_step(
    model: MaskPredictor,
    logits: torch.Tensor,
    mask_index: torch.Tensor,
    start: int,
    end: int,
    k: torch.Tensor,
    cfg: LLaDAGenerationConfig,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step as upstream computes it (`_reference_scores`, whole-row top-k of ``k [B]`` per row).

    Returns ``(proposal [B, L] long, confidence [B, L], selected [B, L] bool)``; ``selected`` only holds
    masked positions (upstream keeps the current token elsewhere).
    """
    proposal, confidence = _reference_scores(logits, mask_index, end, cfg, generator)
    if cfg.confidence_eos_eot_inf:
        # Upstream's own line for this is a typo; rank EOS/EoT proposals last among the candidates instead.
        confidence = confidence.masked_fill(_banned(proposal, model, cfg) & mask_index, float("-inf"))
        columns = torch.arange(mask_index.shape[1], device=mask_index.device)
        selected = select_top_k(confidence, mask_index & (columns < end), k)
    else:
        selected = row_top_k(confidence, k)
    return proposal, confidence, selected & mask_index


def _window_step(
    model: MaskPredictor,
    logits: torch.Tensor,
    mask_index: torch.Tensor,
    start: int,
    end: int,
    k: torch.Tensor,
    cfg: LLaDAGenerationConfig,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step in float32 over the window of columns that can still change (from the first masked
    candidate to ``end``), the top-k restricted to candidates. Same return as `_reference_step`."""
    candidates = mask_index & (torch.arange(mask_index.shape[1], device=mask_index.device) < end)
    masked_cols = candidates.any(dim=0).nonzero()
    first = min(start, int(masked_cols[0])) if masked_cols.numel() else start
    window = logits[:, first:end]
    window_proposal = torch.argmax(add_gumbel_noise(window, cfg.temperature, generator), dim=-1)
    if cfg.remasking == "low_confidence":
        log_p = torch.log_softmax(window.float(), dim=-1)
        score = log_p.gather(-1, window_proposal.unsqueeze(-1)).squeeze(-1).exp()
    else:
        score = torch.rand(window_proposal.shape, device=logits.device, generator=generator)
    if cfg.confidence_eos_eot_inf:
        score = score.masked_fill(_banned(window_proposal, model, cfg), float("-inf"))
    confidence = torch.full(mask_index.shape, float("-inf"), device=logits.device)
    confidence[:, first:end] = score
    confidence = confidence.masked_fill(~candidates, float("-inf"))
    proposal = torch.zeros(mask_index.shape, dtype=torch.long, device=logits.device)
    proposal[:, first:end] = window_proposal
    return proposal, confidence, select_top_k(confidence, candidates, k)
