"""Block diffusion with a KV cache for finished blocks: LLaDA2's sampler.

The sequence (prompt, then ``gen_length`` mask tokens, padded with masks to whole blocks) is cut into
blocks of ``block_length`` starting at position 0. Attention is bidirectional inside a block and causal
across blocks. The prompt's whole blocks are encoded once into the cache; then each block is denoised in
turn, attending to the cache and to itself, and once it holds no mask it is encoded one last time and its
keys/values join the cache (SGLang's scheme: the K/V of a block are those of its final tokens).
``use_cache=False`` recomputes the whole prefix with the block-causal mask at every step instead, as the
model card's ``generate()`` does; the two agree within float rounding.

Each step predicts every position of the current block and commits some masked ones:

- ``algorithm="threshold"`` (the model card's ``generate()``): ``steps`` steps per block with a schedule
  of ``block_length / steps`` tokens (remainder first); a step commits every masked position whose
  proposal has probability > ``threshold`` if there are at least the scheduled count of them, else the
  scheduled count of most confident ones. Proposals are drawn from softmax(logits / temperature) with
  optional top-k / top-p (``torch.multinomial``, as the reference); temperature 0 proposes the argmax,
  except with ``reference_exact``, where, like the reference code, it draws from softmax(logits).
- ``algorithm="low_confidence"`` (SGLang's ``LowConfidence``): argmax proposals; commit every masked
  position with probability > ``threshold``, or else the single most confident one; as many steps as the
  block needs (``steps`` is ignored).

Generation stops after the block in which every row has produced EOS in its answer (and, with
``eos_early_stop``, as soon as a committed EOS closes a fully unmasked answer). Positions left masked by an
early stop are filled with EOS. Rows of a batch share block boundaries; left padding shifts each row's
positions (cumsum of the attention mask), so a batch of one prompt reproduces the reference exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from dllm_sampler.step import MaskPredictor, StepHook, StepState, check_length, check_prompt

__all__ = ["BlockDiffusionConfig", "generate_block", "transfer_schedule"]


@dataclass(frozen=True)
class BlockDiffusionConfig:
    """Settings of `generate_block` (defaults: the model card's ``generate()`` with SGLang's block size).

    Attributes:
        gen_length: tokens to generate.
        block_length: block size (LLaDA2: 32).
        steps: steps per block of the threshold algorithm (capped at ``gen_length // minimal_topk``).
        threshold: probability above which a proposal is committed.
        temperature: proposal sampling temperature; 0 is argmax (see ``reference_exact``).
        top_k: keep the k most likely tokens before sampling (None: all).
        top_p: nucleus mass before sampling (None: 1).
        algorithm: ``"threshold"`` (model card) or ``"low_confidence"`` (SGLang).
        minimal_topk: caps ``steps`` at ``gen_length // minimal_topk`` (model card).
        eos_early_stop: stop as soon as an EOS is committed after a fully unmasked answer.
        use_cache: reuse finished blocks' keys/values (False: recompute the prefix every step).
        reference_exact: temperature 0 draws from softmax(logits) as the reference code does (its
            docstring promises greedy decoding, its code samples); False proposes the argmax.
    """

    SAMPLER_NAME: ClassVar[str] = "block_diffusion"
    GUIDANCE: ClassVar[bool] = False

    gen_length: int = 256
    block_length: int = 32
    steps: int = 32
    threshold: float = 0.95
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    algorithm: Literal["threshold", "low_confidence"] = "threshold"
    minimal_topk: int = 1
    eos_early_stop: bool = False
    use_cache: bool = True
    reference_exact: bool = False

    def __post_init__(self) -> None:
        for name in ("gen_length", "block_length", "steps", "minimal_topk"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.algorithm not in ("threshold", "low_confidence"):
            raise ValueError(f'algorithm must be "threshold" or "low_confidence", got {self.algorithm!r}')
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {self.threshold}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1] or be None, got {self.top_p}")

    @property
    def steps_per_block(self) -> int:
        """Steps of the threshold schedule: ``min(steps, gen_length // minimal_topk)`` (at least 1)."""
        return max(1, min(self.steps, self.gen_length // self.minimal_topk))

    def with_length(self, gen_length: int, steps: int) -> BlockDiffusionConfig:
        """A copy that generates ``gen_length`` tokens at the rate of ``steps`` steps for them: the block
        length (the model's) is kept and the threshold schedule gets ``steps * block_length / gen_length``
        steps per block (rounded up, within ``[1, block_length]``); ``steps == gen_length`` is one token per
        step at least, like the other samplers' ``with_length``."""
        per_block = min(self.block_length, max(1, -(-steps * self.block_length // gen_length)))
        return replace(self, gen_length=gen_length, steps=per_block)

    def sample(
        self, model: MaskPredictor, prompt: Tensor, attention_mask: Tensor | None = None, **kwargs: Any
    ) -> Tensor:
        """`generate_block` with this config; ``kwargs``: ``on_step``, ``generator``, ``with_logits``."""
        return generate_block(model, prompt, attention_mask, self, **kwargs)


def transfer_schedule(block_length: int, steps: int) -> list[int]:
    """Tokens to commit at each of ``steps`` steps: ``block_length // steps``, plus one on the first
    ``block_length % steps`` steps (sums to ``block_length``)."""
    base, extra = divmod(block_length, steps)
    return [base + (i < extra) for i in range(steps)]


def _filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """[N, V] logits with everything outside the top-k / top-p nucleus set to -inf."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        outside = sorted_logits.softmax(dim=-1).cumsum(dim=-1) > top_p
        outside[..., 1:] = outside[..., :-1].clone()
        outside[..., 0] = False
        logits = logits.masked_fill(torch.zeros_like(outside).scatter(-1, order, outside), float("-inf"))
    return logits


def _propose(
    logits: Tensor, config: BlockDiffusionConfig, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Proposed tokens [B, Lb] and their probabilities [B, Lb] (float32) from block logits [B, Lb, V]."""
    b, n, v = logits.shape
    flat = logits.reshape(b * n, v).float()
    greedy = config.algorithm == "low_confidence" or (config.temperature == 0 and not config.reference_exact)
    if greedy:
        probs = flat.softmax(dim=-1)
        token = probs.argmax(dim=-1, keepdim=True)
    else:
        if config.temperature > 0 and config.temperature != 1.0:
            flat = flat / config.temperature
        probs = _filter_logits(flat, config.top_k, config.top_p).softmax(dim=-1)
        token = torch.multinomial(probs, num_samples=1, generator=generator)
    return token.view(b, n), probs.gather(-1, token).view(b, n)


def _select(confidence: Tensor, masked: Tensor, config: BlockDiffusionConfig, scheduled: int) -> Tensor:
    """[B, Lb] bool: the masked positions this step commits (see the module docstring)."""
    chosen = torch.zeros_like(masked)
    confidence = confidence.masked_fill(~masked, float("-inf"))
    above = confidence > config.threshold
    low = config.algorithm == "low_confidence"
    count = 1 if low else scheduled
    for row in range(masked.shape[0]):
        left = int(masked[row].sum())
        if left == 0:
            continue
        n_above = int(above[row].sum())
        if (n_above > 0) if low else (n_above >= count):
            chosen[row] = above[row]
        elif count > 0:
            chosen[row, confidence[row].topk(min(count, left)).indices] = True
    return chosen


def _network(model: MaskPredictor) -> Any:
    network = getattr(model, "model", None)
    if (
        network is None
        or not hasattr(network, "forward")
        or "cache" not in network.forward.__code__.co_varnames
    ):
        raise TypeError(
            "block diffusion needs a model whose network takes allowed/cache/store (LLaDA2MoeModelLM); "
            f"got {type(model).__name__} with network {type(network).__name__}: use the model's own sampler"
        )
    return network


def generate_block(
    model: MaskPredictor,
    prompt: Tensor,
    attention_mask: Tensor | None = None,
    config: BlockDiffusionConfig | None = None,
    on_step: StepHook | None = None,
    generator: torch.Generator | None = None,
    with_logits: bool = False,
    progress: Any = None,
) -> Tensor:
    """Generate ``config.gen_length`` tokens after ``prompt`` [B, Lp] by block diffusion.

    ``on_step`` receives a `StepState` after every step over the window the model saw (positions
    ``[0, block end)``); its ``logits`` (``with_logits``) are zero outside the current block. ``generator``
    drives the multinomial draws (None: the global RNG, as the reference). ``progress`` is accepted for
    interface compatibility and ignored.

    Returns:
        [B, Lp + gen_length] long.
    """
    from dllm_sampler.models.llada2 import KVCache, block_causal_mask

    config = config or BlockDiffusionConfig()
    check_prompt(prompt, attention_mask, model.mask_token_id)
    check_length(model, prompt.shape[1], config.gen_length)
    network = _network(model)
    device = prompt.device
    batch, lp = prompt.shape
    bs = config.block_length
    num_blocks = -(-(lp + config.gen_length) // bs)
    total = num_blocks * bs
    x = torch.full((batch, total), model.mask_token_id, dtype=torch.long, device=device)
    x[:, :lp] = prompt
    pad = None
    if attention_mask is not None and not bool(attention_mask.all()):
        pad = torch.ones(batch, total, dtype=torch.long, device=device)
        pad[:, :lp] = attention_mask
    positions = (
        torch.arange(total, device=device).expand(batch, total)
        if pad is None
        else (pad.cumsum(-1) - 1).clamp_min(0)
    )
    eos = model.eos_token_id
    first = lp // bs
    cache = KVCache() if config.use_cache else None
    if cache is not None and first > 0:
        end = first * bs
        network(
            x[:, :end],
            None if pad is None else pad[:, :end],
            allowed=block_causal_mask(end, bs, device),
            positions=positions[:, :end],
            cache=cache,
            store=True,
        )
    steps = config.steps_per_block if config.algorithm == "threshold" else bs
    schedule = transfer_schedule(bs, steps)
    num_steps = (num_blocks - first) * steps
    step_index = 0
    stopped = False
    for blk in range(first, num_blocks):
        lo, hi = blk * bs, (blk + 1) * bs
        for step in range(steps):
            masked = x[:, lo:hi] == model.mask_token_id
            if not bool(masked.any()):
                break
            logits = _forward(network, x, pad, positions, lo, hi, bs, cache)
            token, prob = _propose(logits, config, generator)
            chosen = _select(prob, masked, config, schedule[step])
            model_input = x[:, :hi].clone()
            x[:, lo:hi] = torch.where(chosen, token, x[:, lo:hi])
            if on_step is not None:
                on_step(
                    _state(
                        model_input,
                        x,
                        pad,
                        lp,
                        lo,
                        hi,
                        prob,
                        masked,
                        logits,
                        with_logits,
                        step_index,
                        num_steps,
                        blk - first,
                        num_blocks - first,
                        model.mask_token_id,
                    )
                )
            step_index += 1
            if (
                config.eos_early_stop
                and eos is not None
                and _early_stop(x, chosen, token, lp, lo, eos, model.mask_token_id)
            ):
                stopped = True
                break
        if stopped:
            break
        if cache is not None:
            network(
                x[:, lo:hi],
                None if pad is None else pad[:, :hi],
                positions=positions[:, lo:hi],
                cache=cache,
                store=True,
            )
        if eos is not None and bool((x[:, lp:hi] == eos).any(dim=1).all()):
            break
    out = x[:, : lp + config.gen_length]
    if eos is not None:
        out = out.masked_fill(out == model.mask_token_id, eos)
    return out


def _forward(
    network: Any,
    x: Tensor,
    pad: Tensor | None,
    positions: Tensor,
    lo: int,
    hi: int,
    bs: int,
    cache: Any,
) -> Tensor:
    """Logits [B, Lb, V] of the block ``[lo, hi)``: with the cache, or recomputing ``[0, hi)``."""
    if cache is not None:
        return network(
            x[:, lo:hi], None if pad is None else pad[:, :hi], positions=positions[:, lo:hi], cache=cache
        )
    from dllm_sampler.models.llada2 import block_causal_mask

    allowed = block_causal_mask(hi, bs, x.device)
    logits = network(
        x[:, :hi], None if pad is None else pad[:, :hi], allowed=allowed, positions=positions[:, :hi]
    )
    return logits[:, lo:hi]


def _early_stop(x: Tensor, chosen: Tensor, token: Tensor, lp: int, lo: int, eos: int, mask_id: int) -> bool:
    """The model card's ``eos_early_stop``: an EOS was committed and, in every row, the answer before its
    first EOS holds no mask."""
    if not bool((token[chosen] == eos).any()):
        return False
    for row in range(x.shape[0]):
        hits = (x[row, lp:] == eos).nonzero()
        if hits.numel() == 0 or bool((x[row, lp : lp + int(hits[0])] == mask_id).any()):
            return False
    return True


def _state(
    model_input: Tensor,
    x: Tensor,
    pad: Tensor | None,
    lp: int,
    lo: int,
    hi: int,
    prob: Tensor,
    masked: Tensor,
    logits: Tensor,
    with_logits: bool,
    step: int,
    num_steps: int,
    block: int,
    num_blocks: int,
    mask_id: int,
) -> StepState:
    """The `StepState` of one step over the window ``[0, hi)``."""
    tokens = x[:, :hi].clone()
    input_mask = model_input == mask_id
    mask = tokens == mask_id
    confidence = torch.full(tokens.shape, float("-inf"), device=x.device)
    confidence[:, lo:hi] = prob.float().masked_fill(~masked, float("-inf"))
    token_confidence = torch.full(tokens.shape, float("-inf"), device=x.device)
    probs = F.softmax(logits.float(), dim=-1).amax(dim=-1)
    token_confidence[:, lo:hi] = probs.masked_fill(~masked, float("-inf"))
    full_logits = None
    if with_logits:
        full_logits = logits.new_zeros(tokens.shape[0], hi, logits.shape[-1])
        full_logits[:, lo:hi] = logits
    return StepState(
        step=step,
        num_steps=num_steps,
        block=block,
        num_blocks=num_blocks,
        prompt_length=lp,
        model_input=model_input,
        input_mask=input_mask,
        tokens=tokens,
        mask=mask,
        committed=input_mask & ~mask,
        confidence=confidence,
        token_confidence=token_confidence,
        attention_mask=None if pad is None else pad[:, :hi].clone(),
        logits=full_logits,
    )
