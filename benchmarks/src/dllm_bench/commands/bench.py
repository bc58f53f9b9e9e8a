"""``dllmq bench``: weight memory and sampler speed of diffusion LMs, side by side.

    dllmq bench --model A [--model B ...] [--device cpu|cuda] [--batch 1] [--gen-length 64] [--steps 64]
                [--synthetic llada-8b|dream-7b [--layers N] [--quantize W4A16|W8A8|W4A4]] [--json FILE]

One table row per model: stored weight memory (MiB, bits per block-linear weight, ratio to the float
equivalent), ms per denoising step, generated tokens/s, steps per token, peak memory, and the ratios of
weights, tokens/s and peak memory to the first row (the baseline, typically the float model).

``--synthetic`` adds a random-weight model with the published shapes (`dllm_bench.synthetic`), built on
``--device`` in ``--dtype`` (default bfloat16), so a GPU can time per-step latency at 8B shapes;
``--layers`` keeps fewer blocks. ``--quantize`` also quantizes it with RTN at that setting through the
pipeline, exports it to a temporary folder and loads it back (``load_any``: packed weights on the
``dllm_kernels`` low-bit GEMMs) as another row.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from dllm_sampler import DiffusionLM
from dllm_sampler.models import ARCH_SPECS
from dllm_sampler.registry import resolve

from dllm_bench.devices import parse_device
from dllm_bench.evaluation.memory import WeightMemory, weight_memory
from dllm_bench.evaluation.speed import PEAK_SOURCES, SpeedResult, sampler_speed
from dllm_bench.loading import load_any
from dllm_bench.pipeline import export_model, quantize_model
from dllm_bench.pipeline.targets import check_fits, ignored_linears
from dllm_bench.recipes import Recipe, load_recipe
from dllm_bench.synthetic import ARCH_OF_SHAPES, synthetic_model

HELP = (
    "Measure weight memory and sampler speed (ms/step, tokens/s, steps/token, peak memory) of models side "
    "by side; --synthetic adds a random-weight model with LLaDA-8B or Dream-7B shapes."
)

DEFAULT_MODEL = "tiny-llada"
SYNTHETIC = {shapes: (arch, shapes) for shapes, arch in ARCH_OF_SHAPES.items()} | {
    f"{arch}-tiny": (arch, "tiny") for arch in ARCH_SPECS
}
"""``--synthetic`` name -> (arch, shapes of `dllm_bench.synthetic`): each published shape (``llada-8b``,
``dream-7b``) and each arch's tiny shape (``llada-tiny``, ``dream-tiny``)."""
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SIZES = {"batch": 1, "gen_length": 1, "steps": 1, "prompt_len": 1, "warmup": 0, "repeats": 1}
"""Size flags and their least allowed value."""
MIB = 2**20


@dataclass(frozen=True)
class BenchRow:
    """One measured model: its label, stored weight memory and sampler speed."""

    name: str
    memory: WeightMemory
    speed: SpeedResult

    def vs(self, base: BenchRow) -> dict[str, float | None]:
        """Ratios to ``base``: total weight bytes, ms per step, tokens/s and peak memory (None if 0)."""
        peak = base.speed.peak_memory_bytes
        return {
            "weights": self.memory.total_bytes / base.memory.total_bytes,
            "step_ms": self.speed.step_ms / base.speed.step_ms,
            "tokens_per_s": self.speed.tokens_per_s / base.speed.tokens_per_s,
            "peak_memory": self.speed.peak_memory_bytes / peak if peak else None,
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        dest="models",
        metavar="MODEL",
        action="append",
        help="shipped model name, checkpoint folder or quantized folder; repeat for more rows, the first is "
        f"the baseline (default {DEFAULT_MODEL} when no --synthetic is given)",
    )
    parser.add_argument("--device", default="cpu", help="where the models run (cpu, cuda, cuda:1, ...)")
    parser.add_argument(
        "--dtype",
        choices=sorted(_DTYPES),
        help="cast models to this dtype (default: as stored; synthetic models bfloat16)",
    )
    parser.add_argument("--batch", type=int, default=1, help="sequences per sampler call (default 1)")
    parser.add_argument("--gen-length", type=int, default=64, help="generated tokens (default 64)")
    parser.add_argument("--steps", type=int, default=64, help="denoising steps per call (default 64)")
    parser.add_argument("--prompt-len", type=int, default=16, help="random prompt tokens (default 16)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls, median reported (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of prompts and synthetic weights")
    parser.add_argument(
        "--synthetic",
        metavar="SHAPES",
        help=f"add a random-weight model with these shapes: {', '.join(SYNTHETIC)}",
    )
    parser.add_argument("--layers", type=int, help="blocks of the synthetic model (default: all)")
    parser.add_argument(
        "--quantize",
        metavar="SCHEME",
        help="also quantize the synthetic model with RTN at this setting (W4A16, W8A8, W4A4, W4A16g64...)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows to this JSON file")


def _check_args(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` naming the flag for bad sizes and flags that need ``--synthetic``."""
    for name, least in _SIZES.items():
        value = getattr(args, name)
        if value < least:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be an integer >= {least}, got {value}")
    if args.synthetic is not None and args.synthetic not in SYNTHETIC:
        raise ValueError(
            f"unknown --synthetic shapes {args.synthetic!r}; choose one of {', '.join(SYNTHETIC)}"
        )
    if args.synthetic is None and (args.layers is not None or args.quantize is not None):
        raise ValueError(
            "--layers and --quantize apply to the synthetic model; add --synthetic llada-8b|dream-7b"
        )
    if args.layers is not None and args.layers < 1:
        raise ValueError(f"--layers must be a positive integer, got {args.layers}")
    for name in args.models or []:
        resolve(name)  # FileNotFoundError naming the shipped models, before any timing


def _release(device: torch.device) -> None:
    """Give freed memory back so the next row's peak is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _measure(name: str, dlm: DiffusionLM, args: argparse.Namespace) -> BenchRow:
    print(f"measuring {name} ...", file=sys.stderr, flush=True)
    speed = sampler_speed(
        dlm,
        args.batch,
        args.gen_length,
        args.steps,
        args.prompt_len,
        args.warmup,
        args.repeats,
        seed=args.seed,
    )
    return BenchRow(name, weight_memory(dlm), speed)


def _quantized_folder(dlm: DiffusionLM, recipe: Recipe, device: torch.device, tmp: Path) -> Path:
    """Quantize ``dlm`` in place with ``recipe`` and export it under ``tmp``; returns the folder."""
    result = quantize_model(dlm, recipe, device=device, progress=False)
    return export_model(result, tmp / "quantized")


def _synthetic_rows(args: argparse.Namespace, device: torch.device, recipe: Recipe | None) -> list[BenchRow]:
    """The float synthetic model's row and, with a ``recipe``, the row of its quantized copy, exported and
    loaded back (packed weights on the low-bit kernels)."""
    arch, shapes = SYNTHETIC[args.synthetic]
    dtype = _DTYPES[args.dtype or "bfloat16"]
    dlm = synthetic_model(arch, shapes, args.layers, dtype=dtype, device=device, seed=args.seed)
    if recipe is not None:
        check_fits(recipe, dlm, ignored_linears(recipe, dlm))  # a bad group size fails before any timing
    layers = len(dlm.topology)
    label = f"synthetic {args.synthetic} ({layers} layer{'s' if layers > 1 else ''})"
    rows = [_measure(label, dlm, args)]
    if recipe is None:
        return rows
    with tempfile.TemporaryDirectory(prefix="dllmq-bench-") as tmp:
        folder = _quantized_folder(dlm, recipe, device, Path(tmp))
        del dlm
        _release(device)
        with warnings.catch_warnings():  # synthetic models have no tokenizer by design
            warnings.filterwarnings("ignore", message=".*no tokenizer.json", category=UserWarning)
            quantized = load_any(folder, device=device)
        rows.append(_measure(f"{label} RTN {recipe.scheme.label}", quantized, args))
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


def _settings(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    return {
        "device": str(device),
        "batch_size": args.batch,
        "gen_length": args.gen_length,
        "steps": args.steps,
        "prompt_len": args.prompt_len,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seed": args.seed,
    }


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


def run(args: argparse.Namespace) -> int:
    device = parse_device(args.device)
    _check_args(args)
    recipe = load_recipe("rtn", scheme=args.quantize) if args.quantize else None
    dtype = _DTYPES[args.dtype] if args.dtype else None
    rows: list[BenchRow] = []
    for name in args.models or ([] if args.synthetic else [DEFAULT_MODEL]):
        dlm = load_any(name, dtype=dtype, device=device)
        rows.append(_measure(name, dlm, args))
        del dlm
        _release(device)
    if args.synthetic:
        rows += _synthetic_rows(args, device, recipe)
    settings = _settings(args, device)
    sources = sorted({PEAK_SOURCES[r.speed.peak_memory_source] for r in rows})
    print(", ".join(f"{k} {v}" for k, v in settings.items()) + f"; peak memory: {'; '.join(sources)}")
    print(format_table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report(rows, settings), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0
