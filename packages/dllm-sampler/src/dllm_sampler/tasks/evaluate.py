"""Task metrics of a DiffusionLM: arithmetic exact-match accuracy with the real samplers, code ELBO NLL.

Generation uses each architecture's default sampler (`default_generation_config`: LLaDA low-confidence
remasking at temperature 0; Dream's ``entropy`` algorithm at temperature 0; LLaDA2's block diffusion with
the threshold algorithm) with the answer length set to ``ANSWER_TOKENS + 1`` tokens (the scratchpad answer
and an EOS), one step per token and a single block (LLaDA2: blocks of 32, up to 32 steps each).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer

from dllm_sampler.generate import GenerationConfig, default_generation_config, generate
from dllm_sampler.likelihood import elbo_nll_per_token
from dllm_sampler.step import MaskPredictor
from dllm_sampler.tasks.arithmetic import (
    ANSWER_TOKENS,
    Problem,
    answer_parts,
    format_answer,
    parse_answer,
)
from dllm_sampler.tasks.batching import generation_prompts, special_id
from dllm_sampler.tasks.code import chunk_ids
from dllm_sampler.tasks.tokenizer import BOS

__all__ = [
    "ArithmeticReport",
    "answer_generation_config",
    "answer_part_accuracy",
    "arithmetic_accuracy",
    "character_accuracy",
    "code_nll",
    "exact_accuracy",
    "generate_answers",
    "score_answers",
    "solve",
]

GEN_LENGTH = ANSWER_TOKENS + 1
"""Generated tokens per answer: the answer and one EOS."""


def answer_generation_config(arch: str, gen_length: int = GEN_LENGTH) -> GenerationConfig:
    """The arch's default sampler config with ``gen_length`` tokens and ``gen_length`` steps
    (``with_length``): one block for LLaDA; LLaDA2's block sampler keeps its blocks (32) with one step per
    block position."""
    return default_generation_config(arch).with_length(gen_length, gen_length)


def _require_tokenizer(model: MaskPredictor) -> Tokenizer:
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("the model has no tokenizer; load a checkpoint folder that holds tokenizer.json")
    return tokenizer


@torch.no_grad()
def generate_answers(
    model: MaskPredictor,
    problems: Sequence[Problem],
    batch_size: int = 100,
    config: GenerationConfig | None = None,
) -> list[str]:
    """The decoded generated text of every problem (special tokens kept, e.g. ``<|eos|>``).

    ``model`` is a `DiffusionLM` (it needs ``tokenizer``); ``config`` defaults to
    `answer_generation_config` of ``model.arch``.
    """
    tokenizer = _require_tokenizer(model)
    config = config or answer_generation_config(model.arch)
    device = next(model.model.parameters()).device  # type: ignore[attr-defined]
    texts: list[str] = []
    for start in range(0, len(problems), batch_size):
        prompt, mask = generation_prompts(tokenizer, problems[start : start + batch_size])
        out = generate(model, prompt.to(device), mask.to(device), config)
        texts.extend(
            tokenizer.decode(row, skip_special_tokens=False) for row in out[:, prompt.shape[1] :].tolist()
        )
    return texts


def solve(
    model: MaskPredictor,
    problems: Sequence[Problem],
    batch_size: int = 100,
    config: GenerationConfig | None = None,
) -> list[int | None]:
    """`generate_answers`, parsed by `parse_answer` (None when no final answer can be read)."""
    return [parse_answer(text) for text in generate_answers(model, problems, batch_size, config)]


@dataclass
class ArithmeticReport:
    """Exact-match results: ``correct`` of ``total``, and (correct, total) per difficulty label."""

    correct: int = 0
    total: int = 0
    by_difficulty: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """Fraction of problems answered exactly (0 when empty)."""
        return self.correct / self.total if self.total else 0.0

    def add(self, difficulty: str, ok: bool) -> None:
        """Record one problem."""
        c, t = self.by_difficulty.get(difficulty, (0, 0))
        self.by_difficulty[difficulty] = (c + int(ok), t + 1)
        self.correct += int(ok)
        self.total += 1


def arithmetic_accuracy(
    model: MaskPredictor,
    problems: Sequence[Problem],
    batch_size: int = 100,
    config: GenerationConfig | None = None,
) -> ArithmeticReport:
    """Exact-match accuracy of `generate_answers` on ``problems`` (`score_answers`), overall and per
    ``problem.difficulty``."""
    return score_answers(generate_answers(model, problems, batch_size, config), problems)


def score_answers(texts: Sequence[str], problems: Sequence[Problem]) -> ArithmeticReport:
    """The `ArithmeticReport` of generated ``texts`` (`parse_answer` of each against its problem)."""
    report = ArithmeticReport()
    for text, problem in zip(texts, problems, strict=True):
        report.add(problem.difficulty, parse_answer(text) == problem.answer)
    return report


def exact_accuracy(texts: Sequence[str], problems: Sequence[Problem]) -> float:
    """Fraction of generated ``texts`` whose final answer (`parse_answer`) equals its problem's answer."""
    hits = sum(parse_answer(t) == p.answer for t, p in zip(texts, problems, strict=True))
    return hits / max(1, len(problems))


def character_accuracy(texts: Sequence[str], problems: Sequence[Problem]) -> float:
    """Fraction of answer characters right: generated ``texts`` against ``format_answer`` of ``problems``,
    position by position (the scratchpad's partial credit, meaningful before exact answers are)."""
    targets = [format_answer(p) for p in problems]
    right = sum(sum(map(str.__eq__, t, want)) for t, want in zip(texts, targets, strict=True))
    return right / max(1, sum(len(want) for want in targets))


def answer_part_accuracy(texts: Sequence[str], problems: Sequence[Problem]) -> dict[str, list[float]]:
    """Where generated answers go wrong: for each digit group of the answer (`ANSWER_PARTS`: operands,
    carry rows, results) the fraction of ``texts`` whose character at each place (least significant
    first, ``ANSWER_WIDTH`` places) equals `format_answer`'s. A text too short to reach a place counts as
    wrong there."""
    targets = [format_answer(p) for p in problems]
    pairs = list(zip(texts, targets, strict=True))
    n = max(1, len(pairs))
    return {
        name: [sum(i < len(t) and t[i] == want[i] for t, want in pairs) / n for i in offsets]
        for name, offsets in answer_parts().items()
    }


@torch.no_grad()
def code_nll(
    model: MaskPredictor,
    n_chunks: int = 64,
    chunk_tokens: int = 63,
    mc_num: int = 32,
    seed: int = 0,
) -> float:
    """ELBO NLL (nats/token) of ``n_chunks`` evenly spaced held-out stdlib chunks, ``[bos] + chunk`` each.

    BOS is the conditioning prefix; the estimator is the model's own (`elbo_nll_per_token`), with a seeded
    generator so the number is reproducible.
    """
    tokenizer = _require_tokenizer(model)
    chunks = chunk_ids(lambda s: tokenizer.encode(s, add_special_tokens=False).ids, "heldout", chunk_tokens)
    if n_chunks < 1 or n_chunks > len(chunks):
        raise ValueError(
            f"n_chunks must be in [1, {len(chunks)}] for {chunk_tokens}-token chunks, got {n_chunks}"
        )
    bos = special_id(tokenizer, BOS)
    picked = [chunks[i * len(chunks) // n_chunks] for i in range(n_chunks)]
    device = next(model.model.parameters()).device  # type: ignore[attr-defined]
    sequences = [torch.tensor([bos, *c], device=device) for c in picked]
    generator = torch.Generator(device=device).manual_seed(seed)
    return elbo_nll_per_token(
        model, sequences, mc_num=mc_num, batch_size=mc_num, prefix_lengths=[1] * n_chunks, generator=generator
    )
