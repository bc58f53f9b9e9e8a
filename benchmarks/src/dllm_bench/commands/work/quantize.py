"""The work of ``dllmq quantize`` (arguments and docs: `dllm_bench.commands.quantize`)."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from dllm_calib import parse_calib_spec
from dllm_sampler import check_replaceable
from dllm_sampler.moe_topology import MoETopology
from dllm_sampler.tasks import character_accuracy, exact_accuracy, generate_answers, heldout_problems

from dllm_bench.commands.quantize import DEFAULT_EVAL_PROBLEMS, default_out
from dllm_bench.devices import compute_dtype, parse_device
from dllm_bench.loading import load_any
from dllm_bench.pipeline import (
    LOCK_FILE,
    LOG_FILE,
    SITES_FILE,
    FolderLock,
    WorkDir,
    export_model,
    format_coverage,
    format_sites,
    quantize_model,
    quantized_sites,
)
from dllm_bench.pipeline.runner import QuantizeResult
from dllm_bench.recipes import Recipe, load_recipe, moe_variant


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


def on_gguf_grid(recipe: Recipe, gguf_type: str) -> Recipe:
    """``recipe`` with its weights on the GGUF grid ``gguf_type``; refuses quantized activations."""
    if recipe.scheme.quantizes_activations:
        raise ValueError(
            f"--format gguf: recipe {recipe.name!r} at {recipe.scheme.label} quantizes activations, which "
            "llama.cpp's GGUF cannot express; pick a weight-only scheme (e.g. --scheme W4A16)"
        )
    weights = recipe.scheme.weights.model_copy(update={"gguf": gguf_type})
    return recipe.model_copy(update={"scheme": recipe.scheme.model_copy(update={"weights": weights})})


def _write(args: argparse.Namespace, result: QuantizeResult, out: Path, overwrite: bool) -> Path:
    """The checkpoint folder, or with ``--format gguf`` the GGUF file."""
    source = Path(args.model).resolve() if Path(args.model).is_dir() else args.model
    if args.format != "gguf":
        return export_model(result, out, overwrite=overwrite, source_model=str(source))
    from dllm_weightquant.gguf import write_gguf

    return write_gguf(result.dlm, out, gguf_type=args.gguf_type, source_model=str(source))


def _recipe(args: argparse.Namespace, name: str) -> Recipe:
    """Recipe ``name`` with the flags applied: the scheme, a ``--calib`` corpus, GGUF's grid, the
    calibration sample count."""
    recipe = load_recipe(name, scheme=args.scheme)
    if args.calib is not None:
        corpus, path = parse_calib_spec(args.calib)
        recipe = recipe.with_calibration_corpus(corpus, path, args.calib_field, args.calib_split)
    if args.format == "gguf":
        recipe = on_gguf_grid(recipe, args.gguf_type)
    if args.calib_samples is not None:
        recipe = recipe.with_calibration_samples(args.calib_samples)
    return recipe


def run(args: argparse.Namespace) -> int:
    device = parse_device(args.device)
    recipe = _recipe(args, args.recipe)
    out = args.out or default_out(args)
    overwrite = args.overwrite or args.out is None  # the default location is dllmq's own
    if args.format != "gguf":
        check_replaceable(out, overwrite)  # before hours of quantization, not at export
    work = args.work_dir or out.with_name(f"{out.name}.work")

    dlm = load_any(args.model, dtype=compute_dtype(args.dtype, device))
    variant = moe_variant(args.recipe) if isinstance(dlm.topology, MoETopology) else None
    if variant is not None:
        print(f"{args.model} is a mixture-of-experts model: recipe {args.recipe!r} runs as {variant!r}")
        recipe = _recipe(args, variant)
    task = dlm.generation_defaults.get("dllmq_task")
    n_eval = args.eval_problems
    if n_eval is None:
        n_eval = DEFAULT_EVAL_PROBLEMS if task == "arithmetic" else 0
    float_texts = _answers(dlm, n_eval) if n_eval > 0 else None

    print(f"quantizing {args.model} with recipe {recipe.name!r} at {recipe.scheme.label} on {args.device}")
    print(recipe.calibration.summary())
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
        folder = _write(args, result, out, overwrite)
        export_seconds = time.perf_counter() - start
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)

    print(f"quantized in {result.seconds:.1f} s, exported in {export_seconds:.1f} s to {folder}")
    if args.format != "gguf":
        print(f"per-module log: {folder / LOG_FILE}")
    print(
        f"quantized sites (also in {folder / SITES_FILE}):" if args.format != "gguf" else "quantized sites:"
    )
    print("\n".join(format_sites(quantized_sites(result.dlm))))
    if result.coverage:
        print("expert coverage (calibration tokens per routed expert):")
        print("\n".join(format_coverage(result.coverage)))
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
