"""The work of ``dllmq generate`` (arguments: `dllm_bench.commands.generate`)."""

from __future__ import annotations

import argparse
import dataclasses

import dllm_sampler
import torch
from dllm_sampler.tasks import arithmetic
from tqdm import tqdm

from dllm_bench.devices import compute_dtype, parse_device
from dllm_bench.loading import load_any

TASK_PARSERS = {"arithmetic": arithmetic.parse_answer}
"""Final-answer parsers for the tasks the shipped tiny models were trained on (``dllmq_task``)."""


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
    device = parse_device(args.device)
    dlm = load_any(args.model, dtype=compute_dtype(args.dtype, device), device=device)
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
