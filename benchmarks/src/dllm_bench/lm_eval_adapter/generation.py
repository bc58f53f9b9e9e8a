"""``generate_until`` without lm-eval types: run the real sampler on a context and cut the text.

As in the harnesses the papers use, one request is generated at a time with the model arguments'
``gen_length`` (the task's ``max_gen_toks`` and sampling keywords are not used), and the text is cut as
the architecture's ``ArchSpec.eval_defaults.cut_at_eos`` says:

- LLaDA (``eval_llada.py``): decode with special tokens, cut at the first stop string, then drop the
  special-token strings (EOS padding, EoT).
- Dream (``dream_base``): cut the ids at the first EOS, decode, cut at the first stop string.

``escape_until`` skips the stop strings in both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import dllm_sampler
import torch
from dllm_sampler import DiffusionLM
from dllm_sampler.models import arch_spec

from dllm_bench.lm_eval_adapter.scoring import encode_context
from dllm_bench.lm_eval_adapter.settings import AdapterSettings

__all__ = ["finish_generation", "generate_text", "special_token_strings", "stop_strings", "truncate_at_stops"]

log = logging.getLogger(__name__)


def stop_strings(until: str | Sequence[str] | None) -> list[str]:
    """lm-eval's ``until`` (a string, a list of strings or None) as a list without empty strings."""
    if until is None:
        return []
    if isinstance(until, str):
        until = [until]
    if not all(isinstance(s, str) for s in until):
        raise TypeError(f"until must be a string or a list of strings, got {until!r}")
    return [s for s in until if s]


def truncate_at_stops(text: str, stops: Iterable[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any non-empty stop string.

    The result holds no stop string, and does not depend on the order of ``stops``.
    """
    found = [text.find(stop) for stop in stops if stop]
    return text[: min((at for at in found if at != -1), default=len(text))]


def special_token_strings(dlm: DiffusionLM) -> list[str]:
    """The text of the tokenizer's special tokens, longest first (so none is removed piecewise)."""
    if dlm.tokenizer is None:
        raise RuntimeError("the model has no tokenizer (no tokenizer.json in its folder); lm-eval needs text")
    added = dlm.tokenizer.get_added_tokens_decoder().values()
    return sorted({t.content for t in added if t.special}, key=len, reverse=True)


def finish_generation(dlm: DiffusionLM, ids: Sequence[int], stops: Sequence[str], escape_until: bool) -> str:
    """The answer text of generated token ids ``ids``, cut as the module docstring describes."""
    if arch_spec(dlm.arch).eval_defaults.cut_at_eos:
        ids = list(ids)
        if dlm.eos_token_id in ids:
            ids = ids[: ids.index(dlm.eos_token_id)]
        text = dlm.decode(ids, skip_special_tokens=False)
        return text if escape_until else truncate_at_stops(text, stops)
    text = dlm.decode(list(ids), skip_special_tokens=False)
    if not escape_until:
        text = truncate_at_stops(text, stops)
    for special in special_token_strings(dlm):
        text = text.replace(special, "")
    return text


def generate_text(dlm: DiffusionLM, context: str, stops: Sequence[str], settings: AdapterSettings) -> str:
    """Generate ``settings.gen_length`` tokens after ``context`` with ``settings.sampler`` and return the
    cut answer text.

    The prompt is cut from the left to ``max_length - gen_length`` tokens; the generator is seeded with
    ``settings.seed`` for every request.

    Raises:
        ValueError: ``gen_length`` leaves no room for the prompt within ``max_length``.
    """
    budget = settings.max_length - settings.gen_length
    if budget < 1:
        raise ValueError(
            f"gen_length={settings.gen_length} leaves no room for a prompt within max_length="
            f"{settings.max_length}; pass a smaller gen_length (and steps) in model_args"
        )
    ids = encode_context(dlm, context, settings.add_bos_token)
    if len(ids) > budget:
        log.warning("prompt of %d tokens cut from the left to %d", len(ids), budget)
        ids = ids[-budget:]
    prompt = torch.tensor([ids], dtype=torch.long, device=dlm.device)
    generator = torch.Generator(device=dlm.device).manual_seed(settings.seed)
    out = dllm_sampler.generate(dlm, prompt, config=settings.sampler, generator=generator)
    return finish_generation(dlm, out[0, len(ids) :].tolist(), stops, settings.escape_until)
