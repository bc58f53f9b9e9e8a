"""``dllmq generate``: answer a prompt with a shipped or local dLLM and its real sampler."""

from __future__ import annotations

import argparse

from dllm_bench.commands._checks import add_device_and_dtype, check_model, check_positive

HELP = (
    "Generate text with a diffusion LM (tiny-llada, tiny-dream, a local checkpoint folder or a quantized one "
    "written by dllmq quantize)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="tiny-llada",
        help="shipped model name, checkpoint folder or quantized checkpoint folder",
    )
    parser.add_argument("--prompt", required=True, help="the prompt text")
    parser.add_argument("--raw", action="store_true", help="do not apply the model's prompt template")
    add_device_and_dtype(parser)
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


def check(args: argparse.Namespace) -> None:
    check_model(args.model)
    check_positive(args, {"steps": 1, "gen_length": 1, "block_length": 1, "max_new_tokens": 1})


def run(args: argparse.Namespace) -> int:
    from dllm_bench.commands.work import generate

    return generate.run(args)
