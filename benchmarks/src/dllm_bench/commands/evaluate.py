"""``dllmq eval``: score a (quantized) diffusion LM, and compare it with its float reference.

    dllmq eval --model M [--reference F] [--problems N] [--speed] [--json FILE]

Prints held-out arithmetic exact match and answer characters (models trained on the arithmetic task), the
held-out code ELBO NLL, the weight memory, and with a reference the fidelity per mask ratio (top-1
agreement, KL on masked positions) and the same task numbers for the reference. ``--speed`` adds the
sampler's ms per step and tokens/s. The reference defaults to the float model a quantized folder's
provenance names.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from dllm_sampler import DiffusionLM
from dllm_sampler.tasks import (
    character_accuracy,
    code_nll,
    exact_accuracy,
    generate_answers,
    heldout_problems,
)

from dllm_bench.devices import parse_device
from dllm_bench.evaluation import mask_ratio_fidelity, sampler_speed, weight_memory
from dllm_bench.loading import default_reference, is_quantized_folder, load_any

HELP = "Score a model (arithmetic, code NLL, memory, speed) and its fidelity to the float reference."

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_MIB = 2**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-llada", help="shipped name, checkpoint or quantized folder")
    parser.add_argument(
        "--reference", help="float model to compare with (default: a quantized folder's source model)"
    )
    parser.add_argument("--problems", type=int, default=200, help="held-out arithmetic problems")
    parser.add_argument("--code-chunks", type=int, default=32, help="held-out code chunks for the NLL")
    parser.add_argument("--mc-num", type=int, default=16, help="Monte-Carlo samples per code chunk")
    parser.add_argument(
        "--ratios", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9], help="fidelity mask ratios"
    )
    parser.add_argument("--speed", action="store_true", help="also time the sampler (64 tokens, 64 steps)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="float32", help="compute dtype")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every number to this file")


def _check(args: argparse.Namespace) -> None:
    if args.problems < 0 or args.code_chunks < 0 or args.mc_num < 1:
        raise ValueError("--problems and --code-chunks must be >= 0 and --mc-num >= 1")
    if not all(0.0 < r <= 1.0 for r in args.ratios):
        raise ValueError(f"--ratios must lie in (0, 1], got {args.ratios}")


def _task_scores(dlm: DiffusionLM, args: argparse.Namespace) -> dict[str, float]:
    scores: dict[str, float] = {}
    if args.problems and dlm.generation_defaults.get("dllmq_task") == "arithmetic":
        problems = heldout_problems(args.problems)
        texts = generate_answers(dlm, problems)
        scores["exact"] = exact_accuracy(texts, problems)
        scores["chars"] = character_accuracy(texts, problems)
    if args.code_chunks:
        scores["code_nll"] = code_nll(dlm, n_chunks=args.code_chunks, mc_num=args.mc_num)
    return scores


def _reference_name(args: argparse.Namespace) -> str | None:
    if args.reference:
        return args.reference
    return default_reference(args.model) if is_quantized_folder(args.model) else None


def _print_scores(name: str, scores: dict[str, float], reference: dict[str, float] | None) -> None:
    cells = {"exact": "exact {:.1%}", "chars": "answer chars {:.1%}", "code_nll": "code NLL {:.3f}"}
    shown = [fmt.format(scores[k]) for k, fmt in cells.items() if k in scores]
    if reference and "code_nll" in scores and "code_nll" in reference:
        shown.append(f"ΔNLL {scores['code_nll'] - reference['code_nll']:+.3f}")
    print(f"  {name:<10} " + ", ".join(shown))


def run(args: argparse.Namespace) -> int:
    _check(args)
    device = parse_device(args.device)
    dlm = load_any(args.model, dtype=_DTYPES[args.dtype], device=device)
    reference_name = _reference_name(args)
    reference = load_any(reference_name, dtype=_DTYPES[args.dtype], device=device) if reference_name else None
    report: dict[str, Any] = {"model": args.model, "reference": reference_name}

    report["scores"] = _task_scores(dlm, args)
    report["reference_scores"] = _task_scores(reference, args) if reference is not None else None
    print(f"{args.model}" + (f" vs {reference_name}" if reference_name else ""))
    if reference is not None:
        _print_scores("reference", report["reference_scores"], None)
    _print_scores("model", report["scores"], report["reference_scores"])

    memory = weight_memory(dlm)
    report["memory"] = memory.to_dict()
    print(
        f"  weights    {memory.total_bytes / _MIB:.2f} MiB, block linears {memory.bits_per_weight:.2f} "
        f"bits/weight ({memory.ratio_to_float:.2f}x the float model's bytes)"
    )
    if reference is not None:
        rows = mask_ratio_fidelity(dlm, reference, args.ratios)
        report["fidelity"] = [r.to_dict() for r in rows]
        print("  fidelity   source      mask ratio   top-1 agreement   KL (nats)")
        for r in rows:
            print(
                f"             {r.source:<11} {r.mask_ratio:>10.2f} {r.top1_agreement:>17.1%} {r.kl:>11.5f}"
            )
    if args.speed:
        speed = sampler_speed(dlm)
        report["speed"] = speed.to_dict()
        print(
            f"  speed      {speed.step_ms:.2f} ms/step, {speed.tokens_per_s:.1f} tokens/s, "
            f"{speed.steps_per_token:.2f} steps/token on {speed.device}"
        )
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, args.json)
    return 0
