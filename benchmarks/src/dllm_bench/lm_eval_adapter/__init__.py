"""lm-evaluation-harness model ``dllmq``: LLaDA / Dream (plain or quantized) under the papers' protocol.

Importing this package registers the model with lm-eval under the name ``dllmq``. It needs the optional
extra: ``pip install 'dllm-bench[lm-eval]'`` (``import dllm_bench`` alone never imports lm-eval).

lm-eval 0.4's own ``lm_eval`` command only knows its built-in models (there is no plugin discovery), so run
the harness through this package, which registers ``dllmq`` and then hands over to lm-eval's command line
(same arguments)::

    python -m dllm_bench.lm_eval_adapter --model dllmq \\
        --model_args pretrained=/path/to/LLaDA-8B-Instruct,mc_num=128,batch_size=32 \\
        --tasks arc_challenge,hellaswag,piqa,winogrande --device cuda --output_path results/

    python -m dllm_bench.lm_eval_adapter --model dllmq \\
        --model_args pretrained=runs/llada-gptq-w4,gen_length=256,steps=256,block_length=32 \\
        --tasks gsm8k --num_fewshot 4 --device cuda

From Python::

    import dllm_bench.lm_eval_adapter  # registers "dllmq"
    from lm_eval import simple_evaluate

    results = simple_evaluate(
        model="dllmq",
        model_args="pretrained=/path/to/LLaDA-8B-Instruct,mc_num=128,batch_size=32",
        tasks=["arc_challenge", "piqa"],
        device="cuda",
    )

Protocol (QDLM's ``llada_dist`` / ``dream_base``, LLaDA's ``get_log_likelihood``): ``loglikelihood`` is
the Monte-Carlo ELBO of ``dllm_sampler.log_likelihood`` (``mc_num=128``; MMLU uses ``mc_num=1``), with
LLaDA's greedy check when ``is_check_greedy=true``; ``generate_until`` runs the real sampler at
temperature 0 (LLaDA: low-confidence remasking, ``steps = gen_length = block_length = 1024`` unless given;
Dream: ``alg=entropy``, ``alg_temp=0``, 128 tokens in 512 steps) and cuts the text at the task's stop
strings; ``loglikelihood_rolling`` raises NotImplementedError (the protocol defines none). The core logic
lives in plain functions (`settings`, `scoring`, `generation`) that take a ``DiffusionLM``, not lm-eval
types.
"""

try:
    import lm_eval  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a test that hides lm_eval
    raise ImportError(
        "dllm_bench.lm_eval_adapter needs lm-evaluation-harness: install it with "
        "`pip install 'dllm-bench[lm-eval]'` (or `uv sync --extra lm-eval` in the dllmq workspace)"
    ) from exc

from dllm_bench.lm_eval_adapter.generation import (
    finish_generation,
    generate_text,
    special_token_strings,
    stop_strings,
    truncate_at_stops,
)
from dllm_bench.lm_eval_adapter.model import DllmqLM
from dllm_bench.lm_eval_adapter.scoring import (
    encode_context,
    encode_pair,
    fit_to_length,
    greedy_config,
    greedy_continuation,
    score_continuation,
)
from dllm_bench.lm_eval_adapter.settings import (
    DEFAULT_SEED,
    AdapterSettings,
    build_settings,
    default_max_length,
    merge_model_args,
    parse_dtype,
    resolve_device,
    sampler_config,
)

__all__ = [
    "DEFAULT_SEED",
    "AdapterSettings",
    "DllmqLM",
    "build_settings",
    "default_max_length",
    "encode_context",
    "encode_pair",
    "finish_generation",
    "fit_to_length",
    "generate_text",
    "greedy_config",
    "greedy_continuation",
    "merge_model_args",
    "parse_dtype",
    "resolve_device",
    "sampler_config",
    "score_continuation",
    "special_token_strings",
    "stop_strings",
    "truncate_at_stops",
]
