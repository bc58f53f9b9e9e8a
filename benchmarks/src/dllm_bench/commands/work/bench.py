"""The work of ``dllmq bench`` (arguments and docs: `dllm_bench.commands.bench`)."""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from dllm_sampler import DiffusionLM
from dllm_sampler.atomic import atomic_file

from dllm_bench.commands.bench import DEFAULT_MODEL, float_dtypes, quantize_kinds
from dllm_bench.devices import compute_dtype, parse_device
from dllm_bench.evaluation.memory import WeightMemory, weight_memory
from dllm_bench.evaluation.rounds import interleaved_speeds
from dllm_bench.evaluation.speed import PEAK_SOURCES, SpeedResult, sampler_speed
from dllm_bench.loading import load_any
from dllm_bench.machine import machine
from dllm_bench.pipeline import export_model, quantize_model
from dllm_bench.pipeline.targets import check_fits, ignored_linears
from dllm_bench.recipes import Recipe, load_recipe
from dllm_bench.synthetic import ARCH_OF_SHAPES, DENSE_ARCHS, synthetic_model

SYNTHETIC = {shapes: (arch, shapes) for shapes, arch in ARCH_OF_SHAPES.items()} | {
    f"{arch}-tiny": (arch, "tiny") for arch in DENSE_ARCHS
}
"""``--synthetic`` name -> (arch, shapes of `dllm_bench.synthetic`): each published shape (``llada-8b``,
``dream-7b``) and each arch's tiny shape (``llada-tiny``, ``dream-tiny``); the keys are
`dllm_bench.commands.bench.SYNTHETIC_NAMES`."""
MIB = 2**20


@dataclass(frozen=True)
class BenchRow:
    """One measured model: its label, stored weight memory and sampler speed."""

    name: str
    memory: WeightMemory
    speed: SpeedResult
    step_ratio: float | None = None
    """ms per step over the first interleaved row's, the median of the rounds' ratios (``--rounds``)."""

    def vs(self, base: BenchRow) -> dict[str, float | None]:
        """Ratios to ``base``: total weight bytes, ms per step, tokens/s and peak memory (None if 0). Two
        rows timed in the same interleaved rounds compare by their per-round ratios."""
        peak = base.speed.peak_memory_bytes
        step = self.speed.step_ms / base.speed.step_ms
        if self.step_ratio is not None and base.step_ratio is not None:
            step = self.step_ratio / base.step_ratio
        tokens = self.speed.tokens_per_s / base.speed.tokens_per_s
        return {
            "weights": self.memory.total_bytes / base.memory.total_bytes,
            "step_ms": step,
            "tokens_per_s": tokens * (self.speed.step_ms / base.speed.step_ms) / step,
            "peak_memory": self.speed.peak_memory_bytes / peak if peak else None,
        }


def _release(device: torch.device) -> None:
    """Give freed memory back so the next row's peak is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class RowPlan:
    """A row still to measure: its label and how to load its model (a quantized row quantizes, exports and
    loads the checkpoint back)."""

    label: str
    load: Callable[[], DiffusionLM]


def _speed_settings(args: argparse.Namespace) -> dict[str, int]:
    """The sampler settings every timed row shares, as `sampler_speed` / `interleaved_speeds` keywords."""
    return {
        "batch_size": args.batch,
        "gen_length": args.gen_length,
        "steps": args.steps,
        "prompt_len": args.prompt_len,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seed": args.seed,
    }


def _measure(name: str, dlm: DiffusionLM, args: argparse.Namespace) -> BenchRow:
    print(f"measuring {name} ...", file=sys.stderr, flush=True)
    return BenchRow(name, weight_memory(dlm), sampler_speed(dlm, **_speed_settings(args)))


def _quantized_folder(dlm: DiffusionLM, recipe: Recipe, device: torch.device, tmp: Path) -> Path:
    """Quantize ``dlm`` in place with ``recipe`` and export it under ``tmp``; returns the folder."""
    result = quantize_model(dlm, recipe, device=device, progress=False)
    return export_model(result, tmp / "quantized")


def _load_quantized(load: Callable[[], DiffusionLM], recipe: Recipe, device: torch.device) -> DiffusionLM:
    """``load()``'s model quantized with ``recipe``, exported and loaded back as a user loads a checkpoint
    (packed weights on the low-bit kernels)."""
    dlm = load()
    check_fits(recipe, dlm, ignored_linears(recipe, dlm))  # a bad group size fails before any timing
    with tempfile.TemporaryDirectory(prefix="dllmq-bench-") as tmp:
        folder = _quantized_folder(dlm, recipe, device, Path(tmp))
        del dlm
        _release(device)
        with warnings.catch_warnings():  # synthetic models have no tokenizer by design
            warnings.filterwarnings("ignore", message=".*no tokenizer.json", category=UserWarning)
            return load_any(folder, device=device)


def _model_plans(
    label: str,
    load: Callable[[torch.dtype], DiffusionLM],
    dtypes: list[torch.dtype],
    recipes: list[Recipe],
    device: torch.device,
) -> list[RowPlan]:
    """The float rows of one model (one per dtype, labelled with it when there are several) and its
    quantized rows (the model loaded in the first dtype)."""
    plans = []
    for dtype in dtypes:
        name = label if len(dtypes) == 1 else f"{label} {str(dtype).removeprefix('torch.')}"
        plans.append(RowPlan(name, lambda dtype=dtype: load(dtype)))
    for recipe in recipes:
        plans.append(
            RowPlan(
                f"{label} RTN {recipe.scheme.label}",
                lambda recipe=recipe: _load_quantized(lambda: load(dtypes[0]), recipe, device),
            )
        )
    return plans


def _measure_in_turn(plans: list[RowPlan], args: argparse.Namespace, device: torch.device) -> list[BenchRow]:
    """One row after the other, each model loaded, timed and released before the next."""
    rows = []
    for plan in plans:
        dlm = plan.load()
        rows.append(_measure(plan.label, dlm, args))
        del dlm
        _release(device)
    return rows


def _measure_interleaved(plans: list[RowPlan], args: argparse.Namespace) -> list[BenchRow]:
    """Every model loaded at once and timed in ``--rounds`` interleaved rounds
    (`dllm_bench.evaluation.rounds`)."""
    models = [(plan.label, plan.load()) for plan in plans]
    results = interleaved_speeds(models, args.rounds, **_speed_settings(args))
    return [
        BenchRow(label, weight_memory(dlm), r.speed, r.step_ratio)
        for (label, dlm), r in zip(models, results, strict=True)
    ]


def _llama_rows(name: str, args: argparse.Namespace) -> list[BenchRow]:
    """llama.cpp's rows for model ``name`` (`dllm_bench.evaluation.llamacpp_speed`)."""
    from dllm_bench.evaluation.llamacpp_speed import gguf_files, gguf_memory, llamacpp_speed

    rows = []
    with tempfile.TemporaryDirectory(prefix="dllmq-bench-gguf-") as tmp:
        files = gguf_files(lambda: load_any(name, dtype=torch.float32), Path(tmp))
        threads = args.threads or torch.get_num_threads()
        for kind, path in files.items():
            print(f"measuring llama.cpp {kind} ...", file=sys.stderr, flush=True)
            speed = llamacpp_speed(
                args.llama_cli, path, args.gen_length, args.steps, args.prompt_len,
                args.warmup, args.repeats, threads, kind,
            )  # fmt: skip
            rows.append(BenchRow(f"{name} llama.cpp {kind}", gguf_memory(path), speed))
    return rows


def _mib(n_bytes: int) -> str:
    """Bytes as MiB: one decimal from 10 MiB up, three below (tiny models)."""
    mib = n_bytes / MIB
    return f"{mib:.1f}" if mib >= 10 else f"{mib:.3f}"


def _cells(row: BenchRow, base: BenchRow) -> list[str]:
    m, s, vs = row.memory, row.speed, row.vs(base)
    peak = "-" if vs["peak_memory"] is None else f"{vs['peak_memory']:.2f}"
    return [
        row.name,
        _mib(m.total_bytes),
        f"{m.bits_per_weight:.2f}",
        f"{m.ratio_to_float:.3f}",
        f"{s.step_ms:.2f}",
        f"{s.tokens_per_s:.1f}",
        f"{s.steps_per_token:.2f}",
        _mib(s.peak_memory_bytes),
        f"{vs['weights']:.3f}",
        f"{vs['step_ms']:.2f}",
        f"{vs['tokens_per_s']:.2f}",
        peak,
    ]


HEADER = [
    "model",
    "weights MiB",
    "bits/w",
    "x float",
    "ms/step",
    "tok/s",
    "steps/tok",
    "peak MiB",
    "weights x1st",
    "ms/step x1st",
    "tok/s x1st",
    "peak x1st",
]


def format_table(rows: list[BenchRow]) -> str:
    """The rows as a text table (model left-aligned, numbers right-aligned); ratios are to ``rows[0]``."""
    table = [HEADER, *(_cells(row, rows[0]) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    )


def _settings(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    return {
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        **_speed_settings(args),
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "machine": machine(device),
    }


def _machine_line(info: dict[str, Any]) -> str:
    """One line saying what ran the rows: CPU (and GPU), versions, the weight-only kinds' GEMM precision."""
    parts = [f"machine: {info['cpu']} ({info['cpus']} CPUs)"]
    if "gpu" in info:
        parts.append(info["gpu"])
    parts.append(f"torch {info['torch']}, numba {info['numba']}")
    cap = f", ONEDNN_MAX_CPU_ISA={info['onednn_max_cpu_isa']}" if "onednn_max_cpu_isa" in info else ""
    why = "native bf16 dot products" if info["weight_only_gemm"] == "bfloat16" else "no native bf16"
    parts.append(f"CPU weight-only GEMMs in {info['weight_only_gemm']} ({why}{cap})")
    return "; ".join(parts)


def report(rows: list[BenchRow], settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: the settings and, per row, memory, speed and the ratios to the first row."""
    return {
        "settings": settings,
        "rows": [
            {
                "model": r.name,
                "memory": r.memory.to_dict(),
                "speed": r.speed.to_dict(),
                "vs_first": r.vs(rows[0]),
            }
            for r in rows
        ],
    }


def _synthetic_plans(
    args: argparse.Namespace, device: torch.device, dtypes: list[torch.dtype], recipes: list[Recipe]
) -> list[RowPlan]:
    """The rows of the random-weight model with ``--synthetic`` shapes (float, then quantized)."""
    arch, shapes = SYNTHETIC[args.synthetic]

    def load(dtype: torch.dtype) -> DiffusionLM:
        return synthetic_model(arch, shapes, args.layers, dtype=dtype, device=device, seed=args.seed)

    probe = load(dtypes[0])
    for recipe in recipes:  # a bad group size fails before any timing
        check_fits(recipe, probe, ignored_linears(recipe, probe))
    layers = len(probe.topology)
    del probe
    label = f"synthetic {args.synthetic} ({layers} layer{'s' if layers > 1 else ''})"
    return _model_plans(label, load, dtypes, recipes, device)


def _set_threads(threads: int | None) -> None:
    """``--threads``: torch's and Numba's CPU threads."""
    if threads is None:
        return
    import numba

    # Numba first: starting its OpenMP threading layer resets the OpenMP thread count torch reads, so a
    # torch setting made before it is lost (measured: torch went back to 2 threads after --threads 1).
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> int:
    device = parse_device(args.device)
    _set_threads(args.threads)
    recipes = [load_recipe("rtn", scheme=kind) for kind in quantize_kinds(args)]
    names = float_dtypes(args)
    dtypes = [getattr(torch, n) for n in names] if names else [compute_dtype(args.dtype, device)]
    plans: list[RowPlan] = []
    for name in args.models or ([] if args.synthetic else [DEFAULT_MODEL]):

        def load(dtype: torch.dtype, name: str = name) -> DiffusionLM:
            return load_any(name, dtype=dtype, device=device)

        plans += _model_plans(name, load, dtypes, recipes, device)
    if args.synthetic:
        plans += _synthetic_plans(args, device, dtypes, recipes)
    rows = _measure_interleaved(plans, args) if args.rounds > 1 else _measure_in_turn(plans, args, device)
    if args.llama_cli is not None:  # `check` made sure there is a --model
        for name in args.models:
            rows += _llama_rows(name, args)
    settings = _settings(args, device, dtypes[0])
    sources = sorted({PEAK_SOURCES[r.speed.peak_memory_source] for r in rows})
    shown = {k: v for k, v in settings.items() if k != "machine"}
    print(_machine_line(settings["machine"]))
    print(", ".join(f"{k} {v}" for k, v in shown.items()) + f"; peak memory: {'; '.join(sources)}")
    print(format_table(rows))
    if args.json is not None:
        with atomic_file(args.json) as fh:
            fh.write(json.dumps(report(rows, settings), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
