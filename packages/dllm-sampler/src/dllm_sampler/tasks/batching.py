"""Token batches of arithmetic problems for training (SFT layout) and for generation (left-padded prompts).

Layout of one training row: ``pad ... pad [bos] prompt | answer eos``: the prompt is
``format_prompt(problem)`` and the answer ``format_answer(problem)`` followed by one EOS (LLaDA's SFT
recipe counts the EOS as part of the answer). Rows are left-padded with pad and an attention mask, exactly
like generation prompts, so the answer region of every row has the length the sampler generates
(``ANSWER_TOKENS + 1``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer

from dllm_sampler.tasks.arithmetic import Problem, format_answer, format_prompt
from dllm_sampler.tasks.tokenizer import BOS, EOS, PAD

__all__ = ["generation_prompts", "sft_batch", "special_id"]


def special_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of a special token; raises ValueError naming the token if the tokenizer lacks it."""
    idx = tokenizer.token_to_id(token)
    if idx is None:
        raise ValueError(
            f"tokenizer has no {token!r} token; use the tiny models' tokenizer (train_tokenizer)"
        )
    return idx


def _prompt_ids(tokenizer: Tokenizer, problems: Sequence[Problem]) -> list[list[int]]:
    bos = special_id(tokenizer, BOS)
    encoded = tokenizer.encode_batch([format_prompt(p) for p in problems], add_special_tokens=False)
    return [[bos, *e.ids] for e in encoded]


def sft_batch(
    tokenizer: Tokenizer, problems: Sequence[Problem]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean training rows, their prompt mask and attention mask (left padding).

    Returns:
        ``(x0 [B, L] int64, prompt_mask [B, L] bool, attention_mask [B, L] int64)``; ``prompt_mask`` is True
        on the padding and on ``[bos] prompt`` (never masked), ``attention_mask`` is 0 on the padding.
    """
    if not problems:
        raise ValueError("problems is empty")
    eos = special_id(tokenizer, EOS)
    answers = tokenizer.encode_batch([format_answer(p) for p in problems], add_special_tokens=False)
    ids, attention_mask = _left_pad(
        tokenizer, [p + a.ids + [eos] for p, a in zip(_prompt_ids(tokenizer, problems), answers, strict=True)]
    )
    answer_len = torch.tensor([len(a.ids) + 1 for a in answers])
    columns = torch.arange(ids.shape[1])
    prompt_mask = columns[None, :] < (ids.shape[1] - answer_len)[:, None]
    return ids, prompt_mask, attention_mask


def _left_pad(tokenizer: Tokenizer, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    pad = special_id(tokenizer, PAD)
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = torch.tensor(row)
        mask[i, length - len(row) :] = 1
    return ids, mask


def generation_prompts(
    tokenizer: Tokenizer, problems: Sequence[Problem]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``[bos] prompt`` rows for the samplers.

    Returns:
        ``(prompt [B, Lp] int64, attention_mask [B, Lp] int64)``, 0 on the pad positions.
    """
    if not problems:
        raise ValueError("problems is empty")
    return _left_pad(tokenizer, _prompt_ids(tokenizer, problems))
