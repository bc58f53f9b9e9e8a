"""`DllmqLM`: the lm-eval ``LM`` registered as ``dllmq``; a thin shell over `scoring` and `generation`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import lm_eval.models  # noqa: F401  (fills lm-eval's lazy registry first, so get_model("hf") keeps working)
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import simple_parse_args_string
from tqdm.auto import tqdm

from dllm_bench.lm_eval_adapter.generation import generate_text, stop_strings
from dllm_bench.lm_eval_adapter.scoring import encode_pair, score_continuation
from dllm_bench.lm_eval_adapter.settings import (
    DEFAULT_SEED,
    build_settings,
    merge_model_args,
    parse_dtype,
    resolve_device,
)
from dllm_bench.loading import load_any

__all__ = ["DllmqLM"]


@register_model("dllmq")
class DllmqLM(LM):
    """A LLaDA or Dream model (shipped name, HF-format folder or ``dllmq quantize`` output) for lm-eval.

    Model arguments (``--model_args k=v,...``); None means the protocol default of the model's arch, see
    `dllm_bench.lm_eval_adapter.settings`:

    - ``pretrained``: name or folder, loaded with ``dllm_bench.loading.load_any``.
    - ``device`` (default cuda if available, else cpu; a CUDA device asked for on a machine without one
      falls back to cpu with a warning), ``dtype`` (float32 / float16 / bfloat16, or auto for the stored
      dtype; default float32 on CPU, bfloat16 on CUDA).
    - likelihood: ``mc_num`` (128), ``batch_size`` (Monte-Carlo batch, 32), ``is_check_greedy`` (False),
      ``cfg`` (0), ``seed`` (1234). lm-eval's command line always passes its ``--batch_size`` (1 when not
      given), which applies unless model_args has ``batch_size``: put ``batch_size=32`` in model_args.
    - generation: ``steps``, ``gen_length``, ``temperature`` (0); LLaDA ``block_length``, ``remasking``
      (low_confidence); Dream ``alg`` (entropy), ``alg_temp`` (0), ``top_p`` (0.95), ``top_k``. As in the
      protocol, the task's ``max_gen_toks`` and sampling keywords are not used; ``until`` is.
    - text: ``max_length``, ``add_bos_token``, ``escape_until`` (False: stop strings are honoured).

    ``loglikelihood_rolling`` is not implemented: the protocol defines none (LLaDA's and Dream's harnesses
    raise too); use ``dllm_sampler.elbo_nll_per_token`` for ELBO perplexity. Chat templates are not
    supported (lm-eval's ``--apply_chat_template``).
    """

    def __init__(
        self,
        pretrained: str | Path,
        device: str | None = None,
        dtype: str | None = None,
        mc_num: int = 128,
        batch_size: int | str | None = None,
        is_check_greedy: bool = False,
        cfg: float = 0.0,
        seed: int = DEFAULT_SEED,
        steps: int | None = None,
        gen_length: int | None = None,
        block_length: int | None = None,
        remasking: str | None = None,
        temperature: float = 0.0,
        alg: str | None = None,
        alg_temp: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        max_length: int | None = None,
        add_bos_token: bool | None = None,
        escape_until: bool = False,
    ) -> None:
        super().__init__()
        self.pretrained = str(pretrained)
        where = resolve_device(device)
        self.dlm = load_any(pretrained, dtype=parse_dtype(dtype, where), device=where)
        self.settings = build_settings(
            self.dlm,
            mc_num=mc_num,
            batch_size=batch_size,
            is_check_greedy=is_check_greedy,
            cfg=cfg,
            seed=seed,
            max_length=max_length,
            add_bos_token=add_bos_token,
            escape_until=escape_until,
            steps=steps,
            gen_length=gen_length,
            block_length=block_length,
            remasking=remasking,
            temperature=temperature,
            alg=alg,
            alg_temp=alg_temp,
            top_p=top_p,
            top_k=top_k,
        )
        self._device = self.dlm.device

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict[str, Any] | None = None) -> Self:
        """Build from ``"pretrained=...,mc_num=128"``; the harness's ``batch_size``/``device`` fill in
        what the string leaves out (see `merge_model_args`)."""
        return cls(**merge_model_args(simple_parse_args_string(arg_string), additional_config))

    @classmethod
    def create_from_arg_obj(
        cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None
    ) -> Self:
        """Build from a dict of model arguments (as ``simple_evaluate(model_args={...})`` passes)."""
        return cls(**merge_model_args(dict(arg_dict), additional_config))

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """``(ELBO log-likelihood in nats, is_greedy)`` per ``(context, continuation)`` request."""
        results = []
        for request in tqdm(requests, desc="dllmq loglikelihood", disable=disable_tqdm):
            context, continuation = request.args
            prefix, target = encode_pair(self.dlm, context, continuation, self.settings.add_bos_token)
            result = score_continuation(self.dlm, prefix, target, self.settings)
            self.cache_hook.add_partial("loglikelihood", request.args, result)
            results.append(result)
        return results

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Not part of the protocol; always raises NotImplementedError."""
        raise NotImplementedError(
            "dllmq does not implement loglikelihood_rolling (perplexity tasks such as wikitext): the "
            "LLaDA/Dream evaluation protocol defines no rolling ELBO. Use "
            "dllm_sampler.elbo_nll_per_token for an ELBO perplexity outside lm-eval."
        )

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """The sampler's answer per ``(context, gen_kwargs)`` request, cut at ``gen_kwargs["until"]``."""
        results = []
        for request in tqdm(requests, desc="dllmq generate_until", disable=disable_tqdm):
            context, gen_kwargs = request.args
            text = generate_text(self.dlm, context, stop_strings(gen_kwargs.get("until")), self.settings)
            self.cache_hook.add_partial("generate_until", request.args, text)
            results.append(text)
        return results

    def get_model_info(self) -> dict[str, Any]:
        """Recorded by lm-eval in the results' ``config``."""
        return {"pretrained": self.pretrained, "arch": self.dlm.arch, **self.settings.to_dict()}
