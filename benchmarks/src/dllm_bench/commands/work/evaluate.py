"""The work of ``dllmq eval`` (arguments and docs: `dllm_bench.commands.evaluate`).

The measurements run as a list of stages (loading, each batch of arithmetic problems, the code NLL, each
fidelity mask ratio, the speed) under one tqdm bar on stderr, so a long evaluation shows where it is.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from dllm_sampler import DiffusionLM
from dllm_sampler.atomic import atomic_file
from dllm_sampler.tasks import (
    character_accuracy,
    code_nll,
    exact_accuracy,
    generate_answers,
    heldout_problems,
)
from tqdm import tqdm

from dllm_bench.devices import compute_dtype, parse_device
from dllm_bench.evaluation import FidelityRow, mask_ratio_fidelity, sampler_speed, weight_memory
from dllm_bench.loading import default_reference, is_quantized_folder, load_any

_MIB = 2**20
ANSWER_BATCH = 100
"""Problems per sampler call of the arithmetic score (``generate_answers``' own batch size)."""
_SOURCE_ORDER = ("arithmetic", "code")


def _reference_name(args: argparse.Namespace) -> str | None:
    if args.reference:
        return args.reference
    return default_reference(args.model) if is_quantized_folder(args.model) else None


def _is_arithmetic(dlm: DiffusionLM) -> bool:
    return dlm.generation_defaults.get("dllmq_task") == "arithmetic"


def _task_stages(dlm: DiffusionLM, args: argparse.Namespace) -> int:
    """How many progress stages `_task_scores` takes for ``dlm``."""
    answers = -(-args.problems // ANSWER_BATCH) if args.problems and _is_arithmetic(dlm) else 0
    return answers + (1 if args.code_chunks else 0)


def _task_scores(dlm: DiffusionLM, args: argparse.Namespace, bar: tqdm, who: str) -> dict[str, float]:
    scores: dict[str, float] = {}
    if args.problems and _is_arithmetic(dlm):
        problems = heldout_problems(args.problems)
        texts: list[str] = []
        for start in range(0, len(problems), ANSWER_BATCH):
            bar.set_description(f"{who}: arithmetic {start}/{len(problems)}")
            texts += generate_answers(dlm, problems[start : start + ANSWER_BATCH])
            bar.update()
        scores["exact"] = exact_accuracy(texts, problems)
        scores["chars"] = character_accuracy(texts, problems)
    if args.code_chunks:
        bar.set_description(f"{who}: code NLL")
        scores["code_nll"] = code_nll(dlm, n_chunks=args.code_chunks, mc_num=args.mc_num)
        bar.update()
    return scores


def _fidelity(dlm: DiffusionLM, reference: DiffusionLM, ratios: list[float], bar: tqdm) -> list[FidelityRow]:
    """`mask_ratio_fidelity` one ratio at a time (its masks depend only on the ratio), rows ordered as it
    orders them: arithmetic first, ratios in the given order."""
    rows: list[FidelityRow] = []
    for ratio in ratios:
        bar.set_description(f"fidelity at mask ratio {ratio}")
        rows += mask_ratio_fidelity(dlm, reference, [ratio])
        bar.update()
    return sorted(rows, key=lambda r: _SOURCE_ORDER.index(r.source))


def _print_scores(name: str, scores: dict[str, float], reference: dict[str, float] | None) -> None:
    cells = {"exact": "exact {:.1%}", "chars": "answer chars {:.1%}", "code_nll": "code NLL {:.3f}"}
    shown = [fmt.format(scores[k]) for k, fmt in cells.items() if k in scores]
    if reference and "code_nll" in scores and "code_nll" in reference:
        shown.append(f"ΔNLL {scores['code_nll'] - reference['code_nll']:+.3f}")
    print(f"  {name:<10} " + ", ".join(shown))


def _measure(args: argparse.Namespace, bar: tqdm) -> dict[str, Any]:
    """Every number of the report, as the JSON file holds them."""
    device = parse_device(args.device)
    dtype = compute_dtype(args.dtype, device)
    bar.set_description(f"loading {args.model}")
    dlm = load_any(args.model, dtype=dtype, device=device)
    reference_name = _reference_name(args)
    reference = load_any(reference_name, dtype=dtype, device=device) if reference_name else None
    bar.update()
    bar.total = (
        1
        + _task_stages(dlm, args)
        + (_task_stages(reference, args) + len(args.ratios) if reference is not None else 0)
        + (1 if args.speed else 0)
    )
    bar.refresh()
    report: dict[str, Any] = {
        "model": args.model,
        "reference": reference_name,
        "dtype": str(dtype).removeprefix("torch."),
    }
    report["scores"] = _task_scores(dlm, args, bar, "model")
    report["reference_scores"] = _task_scores(reference, args, bar, "reference") if reference else None
    report["memory"] = weight_memory(dlm).to_dict()
    if reference is not None:
        report["fidelity"] = [r.to_dict() for r in _fidelity(dlm, reference, args.ratios, bar)]
    if args.speed:
        bar.set_description("sampler speed")
        report["speed"] = sampler_speed(dlm).to_dict()
        bar.update()
    bar.set_description("done")
    return report


def _print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    reference_name = report["reference"]
    print(f"{args.model}" + (f" vs {reference_name}" if reference_name else ""))
    if report["reference_scores"] is not None:
        _print_scores("reference", report["reference_scores"], None)
    _print_scores("model", report["scores"], report["reference_scores"])
    memory = report["memory"]
    print(
        f"  weights    {memory['total_bytes'] / _MIB:.2f} MiB, block linears {memory['bits_per_weight']:.2f} "
        f"bits/weight ({memory['ratio_to_float']:.2f}x the float model's bytes)"
    )
    if "fidelity" in report:
        print("  fidelity   source      mask ratio   top-1 agreement   KL (nats)")
        for r in report["fidelity"]:
            print(
                f"             {r['source']:<11} {r['mask_ratio']:>10.2f} {r['top1_agreement']:>17.1%} "
                f"{r['kl']:>11.5f}"
            )
    if "speed" in report:
        speed = report["speed"]
        print(
            f"  speed      {speed['step_ms']:.2f} ms/step, {speed['tokens_per_s']:.1f} tokens/s, "
            f"{speed['steps_per_token']:.2f} steps/token on {speed['device']}"
        )


def run(args: argparse.Namespace) -> int:
    with tqdm(total=1, unit="stage", disable=args.no_progress, leave=False) as bar:
        report = _measure(args, bar)
    _print_report(report, args)
    if args.json:
        with atomic_file(args.json) as fh:
            fh.write(json.dumps(report, indent=1, default=str) + "\n")
    return 0
