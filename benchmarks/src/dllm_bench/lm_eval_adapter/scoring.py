"""``loglikelihood`` without lm-eval types: tokenize a (context, continuation) pair, estimate its ELBO
log-likelihood with dllm_sampler's Monte-Carlo estimator, and check whether it is the greedy continuation.

Tokenization follows lm-eval's and LLaDA's ``_encode_pair``: trailing whitespace of the context moves to
the continuation, ``context + continuation`` is encoded as one string and split after the context's token
count. The greedy check is LLaDA's ``suffix_greedy_prediction``: decode ``len(target)`` masks after the
prefix with the model's own sampler at temperature 0, one step per token (LLaDA: low-confidence
remasking, one block, with the likelihood's CFG; Dream: the configured ``alg`` with ``alg_temp = 0``),
and compare with the target.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import dllm_sampler
import torch
from dllm_sampler import DiffusionLM, GenerationConfig

from dllm_bench.lm_eval_adapter.settings import AdapterSettings

__all__ = [
    "encode_context",
    "encode_pair",
    "fit_to_length",
    "greedy_config",
    "greedy_continuation",
    "score_continuation",
]

log = logging.getLogger(__name__)


def encode_context(dlm: DiffusionLM, text: str, add_bos: bool) -> list[int]:
    """Token ids of ``text`` (tokenizer post-processor applied), with BOS prepended when ``add_bos`` and the
    model has one, unless it is already first."""
    ids = dlm.encode(text)
    bos = dlm.bos_token_id
    if add_bos and bos is not None and ids[:1] != [bos]:
        ids = [bos, *ids]
    return ids


def encode_pair(
    dlm: DiffusionLM, context: str, continuation: str, add_bos: bool
) -> tuple[list[int], list[int]]:
    """``(prefix ids, target ids)`` of a likelihood request.

    Raises:
        ValueError: the continuation adds no token.
    """
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    prefix = encode_context(dlm, stripped, add_bos)
    whole = encode_context(dlm, stripped + continuation, add_bos)
    target = whole[len(prefix) :]
    if not target:
        raise ValueError(
            f"continuation {continuation!r} encodes to no tokens after context {stripped[-40:]!r}; "
            "a likelihood request needs a non-empty continuation"
        )
    return prefix, target


def fit_to_length(prefix: list[int], target: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Cut ``prefix`` from the left so that ``len(prefix) + len(target) <= max_length``.

    Raises:
        ValueError: ``target`` alone is longer than ``max_length`` (it cannot be scored whole).
    """
    if len(target) > max_length:
        raise ValueError(
            f"the continuation has {len(target)} tokens, more than max_length={max_length}; raise "
            "max_length in model_args (up to the model's position limit)"
        )
    return prefix[max(0, len(prefix) + len(target) - max_length) :], target


def _generator(dlm: DiffusionLM, seed: int) -> torch.Generator:
    return torch.Generator(device=dlm.device).manual_seed(seed)


def greedy_config(settings: AdapterSettings, length: int) -> GenerationConfig:
    """The sampler config of the greedy check for a ``length``-token target (one token per step): the
    sampler's ``greedy(length)``, with the likelihood's guidance ``settings.cfg`` if it has guidance."""
    config = settings.sampler.greedy(length)
    return dataclasses.replace(config, cfg_scale=settings.cfg) if config.GUIDANCE else config


def greedy_continuation(
    dlm: DiffusionLM, prefix: list[int], length: int, settings: AdapterSettings
) -> list[int]:
    """The ``length`` tokens the model decodes greedily after ``prefix`` (see the module docstring)."""
    prompt = torch.tensor([prefix], dtype=torch.long, device=dlm.device)
    config = greedy_config(settings, length)
    out = dllm_sampler.generate(dlm, prompt, config=config, generator=_generator(dlm, settings.seed))
    return out[0, len(prefix) :].tolist()


def score_continuation(
    dlm: DiffusionLM, prefix: list[int], target: list[int], settings: AdapterSettings
) -> tuple[float, bool]:
    """``(log-likelihood in nats, is_greedy)`` of ``target`` after ``prefix``.

    The log-likelihood is ``dllm_sampler.log_likelihood`` (the arch's estimator: LLaDA's stratified mask
    counts or Dream's stratified times) with ``settings.mc_num`` copies in batches of
    ``settings.batch_size`` and a generator seeded with ``settings.seed``. With ``settings.append_eos``
    (Dream) EOS is appended to the scored sequence. ``prefix`` is cut from the left to fit
    ``settings.max_length``. ``is_greedy`` is False unless ``settings.is_check_greedy``.
    """
    scored = [*target, dlm.eos_token_id] if settings.append_eos else list(target)
    prefix, scored = fit_to_length(prefix, scored, settings.max_length)
    ll = dllm_sampler.log_likelihood(
        dlm,
        torch.tensor(prefix, dtype=torch.long, device=dlm.device),
        torch.tensor(scored, dtype=torch.long, device=dlm.device),
        mc_num=settings.mc_num,
        batch_size=settings.batch_size,
        generator=_generator(dlm, settings.seed),
        cfg_scale=settings.cfg,
    )
    if not math.isfinite(ll):
        log.warning(
            "non-finite log-likelihood %s for a %d-token target; check the model's weights", ll, len(target)
        )
    greedy = settings.is_check_greedy and greedy_continuation(dlm, prefix, len(target), settings) == target
    return ll, greedy
