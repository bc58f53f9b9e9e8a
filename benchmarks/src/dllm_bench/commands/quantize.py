"""``dllmq quantize``: run a recipe on a model with the layer-wise pipeline and write the checkpoint.

With no arguments it quantizes the shipped tiny-llada with the dllmquant recipe into
``runs/tiny-llada-dllmquant`` and prints float vs quantized arithmetic accuracy on held-out problems.
An interrupted run (Ctrl-C, SIGTERM, a crash) resumes from its work directory (``<out>.work``) when started
again with the same arguments: the command says what it found there, and resumes only if the recipe,
scheme, model (config and weights), dtype and calibration match (docs/resume.md); ``--restart`` discards it.
The output and work folders are locked for the run, so a second run on the same ``--out`` is refused.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch
from dllm_sampler import check_replaceable
from dllm_sampler.tasks import character_accuracy, exact_accuracy, generate_answers, heldout_problems

from dllm_bench.devices import parse_device
from dllm_bench.loading import load_any
from dllm_bench.pipeline import (
    LOCK_FILE,
    LOG_FILE,
    SITES_FILE,
    FolderLock,
    WorkDir,
    export_model,
    format_sites,
    quantize_model,
    quantized_sites,
)
from dllm_bench.recipes import SCHEME_LABELS, available_recipes, load_recipe

HELP = "Quantize a diffusion LM with a recipe (default: tiny-llada with dllmquant) and export the checkpoint."

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_EVAL_PROBLEMS = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-llada", help="shipped model name or checkpoint folder")
    parser.add_argument(
        "--recipe",
        default="dllmquant",
        help=f"shipped recipe ({', '.join(available_recipes())}) or YAML file",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (default runs/<model>-<recipe>[-<scheme>], replaced if present)",
    )
    parser.add_argument(
        "--scheme", help=f"bit setting overriding the recipe's, e.g. {', '.join(SCHEME_LABELS)}"
    )
    parser.add_argument("--device", default="cpu", help="where each block is quantized (cpu, cuda, ...)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="float32", help="compute dtype")
    parser.add_argument(
        "--calib-samples", type=int, help="number of calibration states (overrides the recipe)"
    )
    parser.add_argument("--work-dir", type=Path, help="checkpoint folder for resuming (default <out>.work)")
    parser.add_argument("--keep-work", action="store_true", help="keep the work folder after success")
    parser.add_argument(
        "--restart", action="store_true", help="discard what an interrupted run left in the work folder"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument(
        "--eval-problems",
        type=int,
        help=f"held-out arithmetic problems to score float vs quantized (default {DEFAULT_EVAL_PROBLEMS} for "
        "models trained on the arithmetic task, else 0)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _default_out(args: argparse.Namespace) -> Path:
    model = Path(args.model).name or "model"
    recipe = Path(args.recipe).stem
    suffix = f"-{args.scheme}" if args.scheme else ""
    return Path("runs") / f"{model}-{recipe}{suffix}"


def _answers(dlm, n: int) -> list[str]:
    return generate_answers(dlm, heldout_problems(n), batch_size=n)


def _scores(texts: list[str], reference: list[str] | None) -> str:
    """Exact answers, answer characters right and (against ``reference``) identical generations."""
    problems = heldout_problems(len(texts))
    exact = exact_accuracy(texts, problems)
    chars = character_accuracy(texts, problems)
    same = (
        "-"
        if reference is None
        else f"{sum(a == b for a, b in zip(texts, reference, strict=True)) / len(texts):.1%}"
    )
    return f"{exact:>8.1%} {chars:>14.1%} {same:>13}"


def _announce(work: Path, restart: bool) -> None:
    """Say what an earlier run left in ``work`` and what happens to it (``restart``: it is deleted)."""
    found = WorkDir.found(work)
    if found is None:
        return
    if restart:
        print(f"--restart: discarding the interrupted run in {work} ({found})")
        for entry in work.iterdir():
            if entry.name != LOCK_FILE:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        return
    print(
        f"found an interrupted run in {work} ({found}); resuming it if the recipe, scheme, model weights and "
        "calibration match (--restart discards it)"
    )


def run(args: argparse.Namespace) -> int:
    device = parse_device(args.device)
    recipe = load_recipe(args.recipe, scheme=args.scheme)
    if args.calib_samples is not None:
        recipe = recipe.with_calibration_samples(args.calib_samples)
    out = args.out or _default_out(args)
    overwrite = args.overwrite or args.out is None  # the default location is dllmq's own
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} exists and is not empty; pass --overwrite or another --out")
    check_replaceable(out, overwrite)  # before hours of quantization, not at export
    work = args.work_dir or out.with_name(f"{out.name}.work")

    dlm = load_any(args.model, dtype=_DTYPES[args.dtype])
    task = dlm.generation_defaults.get("dllmq_task")
    n_eval = args.eval_problems
    if n_eval is None:
        n_eval = DEFAULT_EVAL_PROBLEMS if task == "arithmetic" else 0
    float_texts = _answers(dlm, n_eval) if n_eval > 0 else None

    print(f"quantizing {args.model} with recipe {recipe.name!r} at {recipe.scheme.label} on {args.device}")
    with FolderLock(work):
        _announce(work, args.restart)
        try:
            result = quantize_model(dlm, recipe, device=device, work_dir=work, progress=not args.no_progress)
        except KeyboardInterrupt:
            done = WorkDir.found(work) or "nothing completed yet"
            raise KeyboardInterrupt(
                f"interrupted; saved in {work}: {done}. Run the same command again to resume"
            ) from None
        start = time.perf_counter()
        source = Path(args.model).resolve() if Path(args.model).is_dir() else args.model
        folder = export_model(result, out, overwrite=overwrite, source_model=str(source))
        export_seconds = time.perf_counter() - start
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)

    print(f"quantized in {result.seconds:.1f} s, exported in {export_seconds:.1f} s to {folder}")
    print(f"per-module log: {folder / LOG_FILE}")
    print(f"quantized sites (also in {folder / SITES_FILE}):")
    print("\n".join(format_sites(quantized_sites(result.dlm))))
    if float_texts is not None:
        quantized = f"quantized ({recipe.name} {recipe.scheme.label})"
        width = max(len(quantized), 24)
        columns = f"{'exact':>8} {'answer chars':>14} {'same as float':>13}"
        print(f"held-out arithmetic, {n_eval} problems:")
        print(f"  {'':<{width}}{columns}")
        print(f"  {'float':<{width}}{_scores(float_texts, None)}")
        print(f"  {quantized:<{width}}{_scores(_answers(result.dlm, n_eval), float_texts)}")
    print(f'try it: dllmq generate --model {folder} --prompt "..."')
    return 0
