"""Error over denoising steps: how far a (quantized) model drifts from its float reference, step by step.

DLLMQuant's diagnosis (docs/references.md#dllmquant, issue 2) is that quantization error accumulates over the
iterations: every step feeds the tokens the quantized model committed back into it. Two measurements
separate the per-step error from its accumulation:

* teacher-forced: the reference's own sampler runs and, at every step, both models see the reference's
  input of that step; their predictions on the still-masked positions are compared (``KL(reference ||
  model)`` in nats per position, and the fraction of positions whose top-1 token differs). This is the
  error one step adds, on the reference's trajectory.
* free-running: each model runs its own sampler from the same prompts; after every step, the fraction of
  the model's committed answer tokens that differ from the reference's final answer. This is the
  accumulated error (committed tokens are never remasked, so the reference's own curve is 0).

Both runs use the same sampler config (by default the arithmetic task's, `answer_generation_config`) and
the same seeded generator, so with the default temperature-0 samplers a model compared with itself gives
zeros everywhere. With classifier-free guidance (LLaDA's ``cfg_scale``) the teacher-forced comparison is
on the conditional logits. Block diffusion's threshold decoding (LLaDA2) takes as many steps as the
model's confidence allows, so the two runs would not line up step by step: it runs with threshold 1.0, one
committed token per step (`fixed_schedule`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import torch
from dllm_sampler import BlockDiffusionConfig, DiffusionLM, GenerationConfig, StepState, generate
from dllm_sampler.tasks import Problem, answer_generation_config, generation_prompts, heldout_problems
from torch import Tensor

from dllm_bench.evaluation.fidelity import check_comparable, compare_logits

__all__ = ["StepRow", "fixed_schedule", "step_error", "step_error_on_prompts"]


def fixed_schedule(config: GenerationConfig) -> GenerationConfig:
    """``config`` with a step count that does not depend on the model: block diffusion's threshold decoding
    at threshold 1.0 (no proposal passes it, so every step commits one token); other configs unchanged."""
    if isinstance(config, BlockDiffusionConfig) and config.algorithm == "threshold":
        return replace(config, threshold=1.0)
    return config


@dataclass(frozen=True)
class StepRow:
    """The two models' difference at one sampler step, over all problems.

    Attributes:
        step: global step index, ``0 .. steps - 1``.
        mask_ratio: mean fraction of the answer still masked in the reference's input at this step (before
            the step's commit): 1 at step 0, falling to ``1 / answer length`` or so at the last step.
        positions: masked answer positions compared at this step (over all problems).
        kl: teacher-forced mean ``KL(reference || model)`` over those positions, nats.
        disagreement: teacher-forced fraction of those positions whose top-1 tokens differ.
        divergence: free-running fraction of the model's committed answer tokens (after this step) that
            differ from the reference's final answer; 0 while nothing is committed.
    """

    step: int
    mask_ratio: float
    positions: int
    kl: float
    disagreement: float
    divergence: float

    def to_dict(self) -> dict[str, int | float]:
        """JSON/CSV-ready fields."""
        return asdict(self)


@dataclass
class _Totals:
    """Sums of one step over problems (rows), turned into a `StepRow` at the end."""

    rows: int = 0
    mask_ratio: float = 0.0
    positions: int = 0
    kl: float = 0.0
    disagree: int = 0
    committed: int = 0
    differ: int = 0

    def add(self, other: _Totals) -> None:
        for name in ("rows", "mask_ratio", "positions", "kl", "disagree", "committed", "differ"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def row(self, step: int) -> StepRow:
        return StepRow(
            step=step,
            mask_ratio=self.mask_ratio / self.rows,
            positions=self.positions,
            kl=self.kl / self.positions if self.positions else 0.0,
            disagreement=self.disagree / self.positions if self.positions else 0.0,
            divergence=self.differ / self.committed if self.committed else 0.0,
        )


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _teacher_forced(
    model: DiffusionLM,
    reference: DiffusionLM,
    prompt: Tensor,
    attention_mask: Tensor | None,
    config: GenerationConfig,
    seed: int,
    tick: Callable[[], None],
) -> tuple[list[_Totals], Tensor]:
    """Per-step totals of the teacher-forced comparison, and the reference's final answer ``[B, Lg]``;
    ``tick`` is called after every step."""
    totals: list[_Totals] = []

    def hook(state: StepState) -> None:
        where = state.input_mask
        ref_logits = reference.logits(state.model_input, state.attention_mask)[where]
        attn = None if state.attention_mask is None else state.attention_mask.to(model.device)
        logits = model.logits(state.model_input.to(model.device), attn)[where.to(model.device)]
        kl, agree = compare_logits(logits, ref_logits)
        ratio = state.response_mask_ratio()
        totals.append(
            _Totals(
                rows=int(ratio.numel()),
                mask_ratio=float(ratio.double().sum()),
                positions=int(agree.numel()),
                kl=float(kl.sum()),
                disagree=int((~agree).sum()),
            )
        )
        tick()

    device = reference.device
    attn = None if attention_mask is None else attention_mask.to(device)
    out = generate(
        reference, prompt.to(device), attn, config, on_step=hook, generator=_generator(device, seed)
    )
    return totals, out[:, prompt.shape[1] :]


def _free_running(
    model: DiffusionLM,
    prompt: Tensor,
    attention_mask: Tensor | None,
    config: GenerationConfig,
    seed: int,
    reference_answer: Tensor,
    tick: Callable[[], None],
) -> list[_Totals]:
    """Per-step counts of the model's committed answer tokens and of those differing from
    ``reference_answer`` ``[B, Lg]``; ``tick`` is called after every step."""
    device = model.device
    target = reference_answer.to(device)
    totals: list[_Totals] = []

    def hook(state: StepState) -> None:
        # block diffusion's sequence holds the blocks started so far, the last one whole (it may run past
        # the answer's end, which the sampler cuts off): compare the positions both have
        n = min(state.tokens.shape[1] - state.prompt_length, target.shape[1])
        committed = ~state.mask[:, state.prompt_length :][:, :n]
        differ = committed & (state.tokens[:, state.prompt_length :][:, :n] != target[:, :n])
        totals.append(_Totals(committed=int(committed.sum()), differ=int(differ.sum())))
        tick()

    attn = None if attention_mask is None else attention_mask.to(device)
    generate(model, prompt.to(device), attn, config, on_step=hook, generator=_generator(device, seed))
    return totals


@torch.no_grad()
def _step_totals(
    model: DiffusionLM,
    reference: DiffusionLM,
    prompt: Tensor,
    attention_mask: Tensor | None,
    config: GenerationConfig,
    seed: int,
    tick: Callable[[], None] = lambda: None,
) -> list[_Totals]:
    forced, answer = _teacher_forced(model, reference, prompt, attention_mask, config, seed, tick)
    free = _free_running(model, prompt, attention_mask, config, seed, answer, tick)
    if len(forced) != len(free):
        raise RuntimeError(f"the two sampler runs took {len(forced)} and {len(free)} steps; expected equal")
    for f, g in zip(forced, free, strict=True):
        f.add(g)
    return forced


def step_error_on_prompts(
    model: DiffusionLM,
    reference: DiffusionLM,
    prompt: Tensor,
    attention_mask: Tensor | None = None,
    config: GenerationConfig | None = None,
    seed: int = 0,
) -> list[StepRow]:
    """Per-step teacher-forced and free-running error of ``model`` against ``reference`` on one batch.

    Args:
        model: the model under test.
        reference: the float model; its sampler defines the teacher-forced trajectory.
        prompt: ``[B, Lp]`` token ids (left-padded), without mask tokens.
        attention_mask: ``[B, Lp]`` (0 on padding) or None.
        config: sampler settings shared by both runs (default: ``reference.arch``'s arithmetic-task
            config, `answer_generation_config`).
        seed: seed of both runs' generators (matters only for stochastic samplers).

    Returns:
        One `StepRow` per sampler step, in step order.
    """
    check_comparable(model, reference)
    config = fixed_schedule(config or answer_generation_config(reference.arch))
    totals = _step_totals(model, reference, prompt, attention_mask, config, seed)
    return [t.row(i) for i, t in enumerate(totals)]


def step_error(
    model: DiffusionLM,
    reference: DiffusionLM,
    problems: Sequence[Problem] | int = 16,
    config: GenerationConfig | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[StepRow]:
    """`step_error_on_prompts` over arithmetic problems (or the first ``problems`` held-out ones), in
    batches of ``batch_size`` prompts, averaged over all problems.

    ``progress(done, total)`` is called after every sampler step of the two runs per batch (``total`` =
    batches x 2 x ``config.steps``)."""
    check_comparable(model, reference)
    if isinstance(problems, int):
        problems = heldout_problems(problems)
    if not problems or batch_size < 1:
        raise ValueError(f"need at least one problem and batch_size >= 1, got {len(problems)}, {batch_size}")
    if reference.tokenizer is None:
        raise ValueError("the reference has no tokenizer; load a checkpoint folder that holds tokenizer.json")
    config = fixed_schedule(config or answer_generation_config(reference.arch))
    total = -(-len(problems) // batch_size) * 2 * config.steps
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    totals: list[_Totals] | None = None
    for start in range(0, len(problems), batch_size):
        prompt, attn = generation_prompts(reference.tokenizer, problems[start : start + batch_size])
        batch = _step_totals(model, reference, prompt, attn, config, seed + start, tick)
        if totals is None:
            totals = batch
        else:
            for t, b in zip(totals, batch, strict=True):
                t.add(b)
    assert totals is not None
    return [t.row(i) for i, t in enumerate(totals)]
