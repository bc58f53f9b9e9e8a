"""Tasks of the tiny reference models: arithmetic word problems, stdlib code, their tokenizer and metrics.

Submodules: ``arithmetic`` (problem generator and answer format), ``code`` (stdlib source corpus),
``tokenizer`` (BPE training), ``batching`` (token batches), ``evaluate`` (accuracy and code NLL).
"""

from dllm_sampler.tasks.arithmetic import (
    ANSWER_PARTS,
    ANSWER_TOKENS,
    ANSWER_WIDTH,
    Problem,
    answer_parts,
    computed_offsets,
    format_answer,
    format_prompt,
    heldout_problems,
    parse_answer,
    train_split,
)
from dllm_sampler.tasks.batching import generation_prompts, sft_batch
from dllm_sampler.tasks.code import HELDOUT_MODULES, chunk_ids, code_modules, code_texts
from dllm_sampler.tasks.evaluate import (
    ArithmeticReport,
    answer_generation_config,
    answer_part_accuracy,
    arithmetic_accuracy,
    character_accuracy,
    code_nll,
    exact_accuracy,
    generate_answers,
    score_answers,
    solve,
)
from dllm_sampler.tasks.tokenizer import SPECIAL_TOKENS, train_tokenizer

__all__ = [
    "ANSWER_PARTS",
    "ANSWER_TOKENS",
    "ANSWER_WIDTH",
    "HELDOUT_MODULES",
    "SPECIAL_TOKENS",
    "ArithmeticReport",
    "Problem",
    "answer_generation_config",
    "answer_part_accuracy",
    "answer_parts",
    "arithmetic_accuracy",
    "character_accuracy",
    "chunk_ids",
    "code_modules",
    "code_nll",
    "code_texts",
    "computed_offsets",
    "exact_accuracy",
    "format_answer",
    "format_prompt",
    "generate_answers",
    "generation_prompts",
    "heldout_problems",
    "parse_answer",
    "score_answers",
    "sft_batch",
    "solve",
    "train_split",
    "train_tokenizer",
]
