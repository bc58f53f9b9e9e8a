"""Dream's masked-diffusion sampler (``diffusion_generate`` / ``_sample`` of Dream's generation utils).

The answer (``max_new_tokens`` masks after the prompt) is denoised along ``t = linspace(1, eps, steps + 1)``,
one global schedule without blocks. From ``t`` to ``s`` each still-masked token is revealed with
probability ``1 - s / t`` (``origin``), or the ``int(num_masked * (1 - s / t))`` masked positions with the
best confidence are committed (``maskgit_plus``, ``topk_margin``, ``entropy``); the last step reveals all
that is left. Tokens are drawn by `dream_sample_tokens` (temperature, then top-p, then top-k, then softmax).

With ``reference_exact`` (the default) a step computes what Dream's ``DreamGenerationMixin._sample`` computes,
in its order and shapes: for ``origin`` U(0, 1) over the flattened masked positions, then the token draws;
token draws as ``torch.distributions.Categorical`` makes them (one ``multinomial`` over the masked rows, and
argmax where the reference's ``try`` falls back to it); scores in the model's dtype (bfloat16 for a bfloat16
model); the top-n (or ``alg_temp`` draw) over each whole row with ``-inf`` off the masked positions, so exact
ties break as the reference's; the batch's mean masked count in the transfer count; and the network applies
RoPE as the reference's does (`reference_rounding`). The same seed then gives the reference's tokens.

Sampling conventions (`DreamGenerationConfig.harness` / `DreamGenerationConfig.readme`): QDLM's evaluation
harness passes ``top_p=0.95, top_k=None``; a README-style ``diffusion_generate`` call that does not pass
``top_k`` gets ``top_k=50`` from transformers' ``PretrainedConfig`` defaults (4.46), whatever Dream's
README says.
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
    sample_without_replacement,
    select_top_k,
)

__all__ = [
    "DREAM_README_TOP_K",
    "DreamGenerationConfig",
    "dream_sample_tokens",
    "dream_transfer_count",
    "generate_dream",
]

DREAM_README_TOP_K = 50
"""The ``top_k`` a ``diffusion_generate`` call gets when it does not pass one: Dream's generation config is
built from the model config, whose transformers (4.46) defaults include ``top_k=50``."""

DreamAlg = Literal["origin", "maskgit_plus", "topk_margin", "entropy"]
_ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")


@dataclass(frozen=True)
class DreamGenerationConfig:
    """Settings of `generate_dream`.

    The defaults are the deterministic ``entropy`` sampler (temperature 0, ``alg_temp`` 0) without top-p or
    top-k filters. The two published conventions differ from them in the filters, which change the entropy
    ranking: `harness` is QDLM's evaluation harness (``top_p=0.95, top_k=None``, 512 steps), `readme` is
    Dream's README call (``temperature=0.2, top_p=0.95``, and ``top_k=50`` that transformers supplies because
    the call does not pass one).

    Attributes:
        max_new_tokens: number of generated tokens.
        steps: denoising steps (a step may commit nothing when ``steps > max_new_tokens``).
        eps: final time of ``linspace(1, eps, steps + 1)``.
        alg: ``"origin"`` (random reveal), ``"maskgit_plus"`` (top probability), ``"topk_margin"``
            (top-1 minus top-2 probability) or ``"entropy"`` (``sum p log p``, higher = more certain).
        alg_temp: 0 commits the top-n confidences; > 0 draws the n positions from
            ``softmax(confidence / alg_temp)`` without replacement.
        temperature: token sampling temperature; 0 is argmax.
        top_p: nucleus filter in (0, 1], or None.
        top_k: top-k filter (>= 1), or None.
        reference_exact: reproduce Dream's ``DreamGenerationMixin`` token for token (see the module
            docstring): its random draws (same seed, same tokens; the ``generator``, or the global RNG
            when None, as the reference's), its tie-breaking and its rounding in bfloat16. False: dllmq's
            float32 step restricted to the masked positions (same distribution, other random stream).
    """

    SAMPLER_NAME: ClassVar[str] = "dream"
    """Name of the sampler this config drives (as reports record it)."""
    GUIDANCE: ClassVar[bool] = False
    """The sampler has no classifier-free guidance."""

    max_new_tokens: int = 128
    steps: int = 128
    eps: float = 1e-3
    alg: DreamAlg = "entropy"
    alg_temp: float = 0.0
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    reference_exact: bool = True

    @classmethod
    def harness(cls, **overrides: Any) -> Self:
        """QDLM's lm-evaluation-harness ``dream_base`` defaults (github FelixMessi/QDLM a106d704,
        ``lm-evaluation-harness/lm_eval/models/dream_base.py``): 128 new tokens in 512 steps, ``entropy``,
        ``alg_temp=0``, temperature 0, ``top_p=0.95``, ``top_k=None``; ``overrides`` replace fields."""
        base: dict[str, Any] = dict(
            max_new_tokens=128,
            steps=512,
            alg="entropy",
            alg_temp=0.0,
            temperature=0.0,
            top_p=0.95,
            top_k=None,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def readme(cls, **overrides: Any) -> Self:
        """Dream's README call (github HKUNLP/Dream a1b4472a, README.md): 512 new tokens in 512 steps,
        ``entropy``, ``alg_temp=0``, ``temperature=0.2``, ``top_p=0.95``, and `DREAM_README_TOP_K` (50), the
        ``top_k`` transformers supplies since the call passes none; ``overrides`` replace fields."""
        base: dict[str, Any] = dict(
            max_new_tokens=512,
            steps=512,
            alg="entropy",
            alg_temp=0.0,
            temperature=0.2,
            top_p=0.95,
            top_k=DREAM_README_TOP_K,
        )
        return cls(**{**base, **overrides})

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {self.eps}")
        if self.alg not in _ALGS:
            raise ValueError(f"alg must be one of {_ALGS}, got {self.alg!r}")
        if self.alg_temp is None or self.alg_temp < 0:
            raise ValueError(f"alg_temp must be >= 0 (0 = deterministic top-n), got {self.alg_temp!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {self.top_k!r}")

    @property
    def gen_length(self) -> int:
        """Generated tokens: ``max_new_tokens``, under the name `LLaDAGenerationConfig` gives it."""
        return self.max_new_tokens

    def with_length(self, gen_length: int, steps: int) -> Self:
        """A copy that generates ``gen_length`` tokens (``max_new_tokens``) in ``steps`` steps."""
        return replace(self, max_new_tokens=gen_length, steps=steps)

    def greedy(self, length: int) -> Self:
        """A deterministic decode of ``length`` tokens, one per step: temperature 0 and ``alg_temp`` 0,
        this config's ``alg``, ``eps``, ``top_p`` and ``top_k`` kept."""
        return replace(self, max_new_tokens=length, steps=length, temperature=0.0, alg_temp=0.0)

    def sample(
        self,
        model: MaskPredictor,
        prompt: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """`generate_dream` with this config; ``kwargs`` are its ``on_step``, ``generator``, ``progress``
        and ``with_logits``. Returns ``[B, Lp + max_new_tokens]`` long."""
        return generate_dream(model, prompt, attention_mask, self, **kwargs)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the shortest prefix of the sorted vocabulary whose mass reaches ``top_p`` (at least one token)."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    mass_before = torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], dim=-1)
    drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, mass_before > top_p)
    return logits.masked_fill(drop, torch.finfo(logits.dtype).min)


def _top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the tokens whose logit is at least the ``top_k``-th largest."""
    kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def _reference_categorical(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor | None:
    """``torch.distributions.Categorical(probs=probs).sample()`` as Dream's ``sample_tokens`` calls it, with
    ``generator``: ``[N]`` long, or None where that call raises (then the reference takes the argmax).

    Categorical normalizes ``probs`` in their dtype and validates the result as a simplex (entries >= 0,
    every row summing to 1 within 1e-6 in that dtype); a row that fails (e.g. NaN from an all-zero row) makes
    the reference fall back to argmax for all rows. Then it draws one ``multinomial`` sample per row.
    """
    normalized = probs / probs.sum(-1, keepdim=True)
    valid = torch.all(normalized >= 0, dim=-1) & ((normalized.sum(-1) - 1).abs() < 1e-6)
    if not bool(valid.all()):
        return None
    try:
        return torch.multinomial(normalized, 1, True, generator=generator).squeeze(-1)
    except RuntimeError:  # the reference's bare ``except`` also takes the argmax after a failed draw
        return None


def dream_sample_tokens(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_p: float | None = None,
    top_k: int | None = None,
    alg: DreamAlg = "maskgit_plus",
    generator: torch.Generator | None = None,
    reference_exact: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a token per row and score it (Dream's ``sample_tokens``).

    ``logits / temperature`` (if > 0) -> top-p -> top-k -> ``p = softmax``; the token is a categorical sample
    of ``p`` if ``temperature > 0``, else ``argmax p``.

    Args:
        logits: ``[N, V]`` logits of N masked positions.
        alg: which confidence to return: ``maskgit_plus``/``origin``: ``p[token]``;
            ``topk_margin``: ``p_top1 - p_top2``; ``entropy``: ``sum_v p log(p + 1e-10)``.
        generator: optional torch generator for the categorical sample.
        reference_exact: compute in ``logits.dtype`` and draw as the reference does
            (`_reference_categorical`); otherwise in float32 with one plain ``multinomial`` draw.

    Returns:
        ``(confidence [N], tokens [N] long)``; confidence in float32, or in ``logits.dtype`` with
        ``reference_exact``.
    """
    if not reference_exact:
        logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = _top_p_filter(logits, top_p)
    if top_k is not None:
        logits = _top_k_filter(logits, top_k)
    probs = torch.softmax(logits, dim=-1)
    tokens = None
    if temperature > 0:
        if reference_exact:
            tokens = _reference_categorical(probs, generator)
        else:
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    if tokens is None:
        confidence, tokens = probs.max(dim=-1)
    else:
        confidence = probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if alg == "topk_margin":
        top2 = torch.topk(probs, 2, dim=-1).values
        confidence = top2[:, 0] - top2[:, 1]
    elif alg == "entropy":
        confidence = (probs * torch.log(probs + 1e-10)).sum(dim=-1)
    return confidence, tokens


def dream_transfer_count(
    num_masked: torch.Tensor, t: torch.Tensor, s: torch.Tensor, last: bool
) -> torch.Tensor:
    """Tokens to commit from time ``t`` to ``s``: ``int(num_masked * (1 - s / t))``, all at the last step.

    Args:
        num_masked: ``[B]`` int, masked tokens per row before the step.
        t, s: 0-d float32 times (``s < t``), as taken from ``linspace(1, eps, steps + 1)``.
        last: whether this is the final step.

    Returns:
        ``[B]`` int64 (computed in float32, like the reference).
    """
    if last:
        return num_masked.long()
    return (num_masked.float() * (1 - s / t)).floor().long()


@torch.no_grad()
def generate_dream(
    model: MaskPredictor,
    prompt: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    config: DreamGenerationConfig | None = None,
    on_step: StepHook | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    with_logits: bool = False,
) -> torch.Tensor:
    """Sample answers with Dream's masked-diffusion sampler.

    Args:
        model: a `MaskPredictor` whose logits are already shifted (Dream's adapter does it).
        prompt: ``[B, Lp]`` token ids, left-padded when rows differ (must not contain the mask id).
        attention_mask: ``[B, Lp]`` or None; extended with ones and passed to the model, which derives
            positions from it.
        config: sampler settings (default `DreamGenerationConfig()`).
        on_step: called with a `StepState` after every step (``block`` is always 0).
        generator: torch generator for the random draws (on the prompt's device).
        progress: show a tqdm bar over the steps.
        with_logits: include the step's ``[B, L, V]`` logits in `StepState`.

    Returns:
        ``[B, Lp + max_new_tokens]`` long.
    """
    cfg = config or DreamGenerationConfig()
    mask_id = model.mask_token_id
    check_prompt(prompt, attention_mask, mask_id)
    check_length(model, prompt.shape[1], cfg.max_new_tokens)
    b, lp = prompt.shape
    x = torch.full((b, lp + cfg.max_new_tokens), mask_id, dtype=torch.long, device=prompt.device)
    x[:, :lp] = prompt
    attn = extend_attention_mask(attention_mask, cfg.max_new_tokens)
    timesteps = torch.linspace(1, cfg.eps, cfg.steps + 1, device=x.device)
    step_fn = _reference_step if cfg.reference_exact else _masked_step

    with reference_rounding(model, cfg.reference_exact):
        for i in tqdm(range(cfg.steps), disable=not progress, desc="dream"):
            mask_index = x == mask_id
            logits = model.logits(x, attn)
            if cfg.reference_exact:
                logits = logits.to(reference_dtype(model, logits))
            t, s, last = timesteps[i], timesteps[i + 1], i == cfg.steps - 1
            proposal, confidence, selected = step_fn(
                logits, x, mask_index, t, s, last, cfg, generator, mask_id
            )
            model_input = x
            x = torch.where(selected, proposal, x)
            if on_step is not None:
                still_masked = x == mask_id
                on_step(
                    StepState(
                        step=i,
                        num_steps=cfg.steps,
                        block=0,
                        num_blocks=1,
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
    return x


def _sample_args(cfg: DreamGenerationConfig, generator: torch.Generator | None) -> dict[str, Any]:
    """The `dream_sample_tokens` keyword arguments of ``cfg``."""
    return {
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k,
        "generator": generator,
        "reference_exact": cfg.reference_exact,
    }


def _reference_step(
    logits: torch.Tensor,
    x: torch.Tensor,
    mask_index: torch.Tensor,
    t: torch.Tensor,
    s: torch.Tensor,
    last: bool,
    cfg: DreamGenerationConfig,
    generator: torch.Generator | None,
    mask_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step as ``DreamGenerationMixin._sample`` computes it, from ``logits`` ``[B, L, V]`` in the
    reference's dtype.

    Returns ``(proposal [B, L] long, confidence [B, L], selected [B, L] bool)``: the step writes
    ``proposal`` where ``selected``. The proposal is the mask id off the masked positions, as the
    reference's, so a drawn unmasked position (possible only when ``alg_temp`` probabilities underflow) is
    written back to a mask as the reference does.
    """
    masked_logits = logits[mask_index]
    confidence = torch.full(x.shape, float("-inf"), dtype=logits.dtype, device=x.device)
    proposal = torch.full_like(x, mask_id)
    if cfg.alg == "origin":
        p_transfer = 1 if last else 1 - s / t
        reveal = torch.rand(masked_logits.shape[0], device=x.device, generator=generator) < p_transfer
        tokens = dream_sample_tokens(masked_logits[reveal], alg="origin", **_sample_args(cfg, generator))[1]
        selected = torch.zeros_like(mask_index)
        selected[mask_index] = reveal
        proposal[selected] = tokens
        return proposal, confidence, selected
    score, tokens = dream_sample_tokens(masked_logits, alg=cfg.alg, **_sample_args(cfg, generator))
    confidence[mask_index] = score
    proposal[mask_index] = tokens
    mean_masked = mask_index.sum() / mask_index.shape[0]
    n = int(mean_masked) if last else int(mean_masked * (1 - s / t))
    selected = torch.zeros_like(mask_index)
    if n > 0:
        if cfg.alg_temp == 0:
            index = torch.topk(confidence, n).indices
        else:
            weights = torch.softmax(confidence / cfg.alg_temp, dim=-1)
            index = torch.multinomial(weights, n, generator=generator)
        selected.scatter_(1, index, True)
    return proposal, confidence, selected


def _masked_step(
    logits: torch.Tensor,
    x: torch.Tensor,
    mask_index: torch.Tensor,
    t: torch.Tensor,
    s: torch.Tensor,
    last: bool,
    cfg: DreamGenerationConfig,
    generator: torch.Generator | None,
    mask_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step in float32 with draws and selection restricted to the masked positions (``origin``: U(0, 1)
    over ``[B, L]``; ``alg_temp``: a float64 draw per row). Same return as `_reference_step` (``mask_id`` is
    unused: the proposal keeps the current tokens)."""
    sample = _sample_args(cfg, generator)
    confidence = torch.full(x.shape, float("-inf"), device=x.device)
    proposal = x.clone()
    if cfg.alg == "origin":
        p_transfer = 1.0 if last else 1 - s / t
        selected = mask_index & (torch.rand(x.shape, device=x.device, generator=generator) < p_transfer)
        if bool(selected.any()):
            proposal[selected] = dream_sample_tokens(logits[selected], alg="origin", **sample)[1]
        return proposal, confidence, selected
    score, tokens = dream_sample_tokens(logits[mask_index], alg=cfg.alg, **sample)
    proposal[mask_index] = tokens
    confidence[mask_index] = score
    n = dream_transfer_count(mask_index.sum(dim=1), t, s, last)
    if cfg.alg_temp == 0:
        return proposal, confidence, select_top_k(confidence, mask_index, n)
    selected = sample_without_replacement(confidence, mask_index, n, cfg.alg_temp, generator)
    return proposal, confidence, selected
