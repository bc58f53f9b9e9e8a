"""The byte-level BPE tokenizer of the tiny reference models, trained on the tasks' training text.

Digits are always single tokens (``Digits(individual_digits=True)`` runs before the byte-level split, so
BPE never merges a digit with anything). Special tokens take the first ids: pad 0, bos 1, eos 2 and the
mask token ``<|mdm_mask|>`` 3 (pad differs from mask, as LLaDA's sampler requires). Training is
deterministic: the same interpreter (stdlib text) and arguments give the same ``tokenizer.json``.
"""

from __future__ import annotations

import random

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dllm_sampler.tasks.arithmetic import format_answer, format_prompt, train_split
from dllm_sampler.tasks.code import code_texts

__all__ = ["BOS", "EOS", "MASK", "PAD", "SPECIAL_TOKENS", "train_tokenizer", "training_corpus"]

PAD, BOS, EOS, MASK = "<|pad|>", "<|bos|>", "<|eos|>", "<|mdm_mask|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, MASK)
"""In id order: pad 0, bos 1, eos 2, mask 3."""


def training_corpus(n_problems: int = 20_000, seed: int = 0) -> list[str]:
    """The tokenizer's training text: ``n_problems`` arithmetic examples (prompt + answer) and the
    training split of the stdlib code corpus (held-out modules excluded)."""
    stream = train_split(seed, (1, 3))
    problems = [next(stream) for _ in range(n_problems)]
    corpus = [f"{format_prompt(p)}{format_answer(p)}" for p in problems]
    corpus.extend(text for _, text in code_texts("train"))
    random.Random(seed).shuffle(corpus)
    return corpus


def train_tokenizer(vocab_size: int = 1024, n_problems: int = 20_000, seed: int = 0) -> Tokenizer:
    """Train the byte-level BPE tokenizer on :func:`training_corpus`.

    Args:
        vocab_size: total vocabulary including the 4 special tokens and the 256 byte tokens.
        n_problems: arithmetic examples in the training text.
        seed: seed of the arithmetic stream and of the corpus order.

    Raises:
        ValueError: if ``vocab_size`` cannot hold the byte alphabet and the special tokens.
    """
    minimum = 256 + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ValueError(f"vocab_size must be at least {minimum} (bytes + special tokens), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_corpus(n_problems, seed), trainer=trainer)
    return tokenizer
