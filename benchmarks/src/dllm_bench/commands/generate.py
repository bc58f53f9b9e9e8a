"""``dllmq generate``: answer a prompt with a shipped or local dLLM and its real sampler."""

from __future__ import annotations

import argparse
import dataclasses

import dllm_sampler
import torch
from dllm_sampler.tasks import arithmetic
from tqdm import tqdm

from dllm_bench.loading import load_any

HELP = (
    "Generate text with a diffusion LM (tiny-llada, tiny-dream, a local checkpoint folder or a quantized one "
    "written by dllmq quantize)."
)

TASK_PARSERS = {"arithmetic": arithmetic.parse_answer}
"""Final-answer parsers for the tasks the shipped tiny models were trained on (``dllmq_task``)."""

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="tiny-llada",
        help="shipped model name, checkpoint folder or quantized checkpoint folder",
    )
    parser.add_argument("--prompt", required=True, help="the prompt text")
    parser.add_argument("--raw", action="store_true", help="do not apply the model's prompt template")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None, help="compute dtype")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sampler = parser.add_argument_group("sampler (defaults come from the model folder)")
    sampler.add_argument("--steps", type=int)
    sampler.add_argument("--gen-length", type=int, help="LLaDA: tokens to generate")
    sampler.add_argument("--block-length", type=int, help="LLaDA: semi-autoregressive block length")
    sampler.add_argument("--max-new-tokens", type=int, help="Dream: tokens to generate")
    sampler.add_argument("--temperature", type=float)
    sampler.add_argument("--cfg-scale", type=float, help="LLaDA: classifier-free guidance scale")
    sampler.add_argument("--remasking", choices=["low_confidence", "random"], help="LLaDA remasking")
    sampler.add_argument("--alg", choices=["origin", "maskgit_plus", "topk_margin", "entropy"], help="Dream")
    sampler.add_argument("--alg-temp", type=float, help="Dream: confidence sampling temperature")
    sampler.add_argument("--top-p", type=float, help="Dream: nucleus sampling")
    sampler.add_argument("--top-k", type=int, help="Dream: top-k sampling")


def sampler_config(dlm, args: argparse.Namespace):
    """The model's default sampler config with the command-line overrides applied."""
    config = dllm_sampler.default_generation_config(dlm.arch)
    defaults = dict(getattr(dlm, "generation_defaults", None) or {})
    names = {f.name for f in dataclasses.fields(config)}
    overrides = {k: v for k, v in defaults.items() if k in names}
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return dataclasses.replace(config, **overrides)


def run(args: argparse.Namespace) -> int:
    dtype = _DTYPES[args.dtype] if args.dtype else None
    dlm = load_any(args.model, dtype=dtype, device=args.device)
    prompt = torch.tensor([dlm.prompt_ids(args.prompt, template=not args.raw)], device=dlm.device)
    config = sampler_config(dlm, args)
    generator = torch.Generator(device=dlm.device).manual_seed(args.seed)
    with tqdm(total=config.steps, desc="denoising", unit="step", disable=args.no_progress) as bar:
        out = dllm_sampler.generate(
            dlm, prompt, config=config, on_step=lambda state: bar.update(1), generator=generator
        )
    text = dlm.answer_text(out[0, prompt.shape[1] :])
    print(text)
    task = dlm.generation_defaults.get("dllmq_task")
    if task in TASK_PARSERS:
        print(f"answer: {TASK_PARSERS[task](text)}")
    return 0
