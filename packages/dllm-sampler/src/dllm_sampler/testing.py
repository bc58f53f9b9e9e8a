"""Random tiny models with a character tokenizer, for tests of code built on dllm_sampler.

The tokenizer maps every printable ASCII character and the newline to one token, after the special
tokens of the shipped tiny models (pad 0, bos 1, eos 2, ``<|mdm_mask|>`` 3, ``<unk>`` 4), so any text
(arithmetic prompts, code) encodes without training a tokenizer, and decoding gives the text back.
"""

from __future__ import annotations

from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from dllm_sampler.adapter import DiffusionLM
from dllm_sampler.config import DreamConfig, LLaDAConfig
from dllm_sampler.models.spec import arch_spec, tiny_config

__all__ = ["CHAR_VOCAB", "char_model_config", "char_tokenizer", "random_char_model"]

_SPECIALS = ("<|pad|>", "<|bos|>", "<|eos|>", "<|mdm_mask|>", "<unk>")
_CHARS = (*(chr(c) for c in range(32, 127)), "\n")
CHAR_VOCAB = len(_SPECIALS) + len(_CHARS)
"""Vocabulary size of `char_tokenizer` (5 specials + 96 characters)."""


def char_tokenizer() -> Tokenizer:
    """One token per character; special ids pad 0, bos 1, eos 2, mask 3, unk 4."""
    tokenizer = Tokenizer(
        models.WordLevel({t: i for i, t in enumerate(_SPECIALS + _CHARS)}, unk_token="<unk>")
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


def char_model_config(arch: str, **overrides: Any) -> LLaDAConfig | DreamConfig:
    """`tiny_config` of ``arch`` with `char_tokenizer`'s vocabulary (every ``VOCAB_KEYS`` key of the config
    class is `CHAR_VOCAB`) and special ids; ``overrides`` use the architecture's own config keys."""
    ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "mask_token_id": 3}
    vocab = dict.fromkeys(arch_spec(arch).config_cls.VOCAB_KEYS, CHAR_VOCAB)
    return tiny_config(arch, **{**vocab, **ids, **overrides})


def random_char_model(
    arch: str, seed: int = 0, model_class: type[DiffusionLM] = DiffusionLM, **overrides: Any
) -> DiffusionLM:
    """A seeded random `char_model_config` model (float32, CPU) with `char_tokenizer` attached."""
    return model_class.from_config(
        char_model_config(arch, **overrides), seed=seed, tokenizer=char_tokenizer()
    )
