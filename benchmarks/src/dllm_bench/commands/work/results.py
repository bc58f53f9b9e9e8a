"""The work of ``dllmq results`` (arguments and docs: `dllm_bench.commands.results`)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch
from dllm_sampler.atomic import atomic_file
from tqdm import tqdm

from dllm_bench.commands.results import MARKER, MODELS, OUT, add_arguments
from dllm_bench.loading import load_any
from dllm_bench.results import (
    Cell,
    CellResult,
    EvalSettings,
    default_cells,
    measure,
    moe_cells,
    qdlm_cells,
    render_results,
    run_cell,
)


def _write_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as fh:
        fh.write(text)


def _header(raw: dict) -> str:
    """How the numbers in ``raw`` (the JSON a run writes) were produced."""
    settings = raw["settings"]
    commands = raw["command"] if isinstance(raw["command"], list) else [raw["command"]]
    how = " and ".join(f"`{c}`" for c in commands) + (", side by side," if len(commands) > 1 else "")
    return "\n".join(
        [
            MARKER,
            "",
            f"Produced by {how} on {raw['date']} ({raw['machine']}) in {raw['seconds'] / 60:.1f} minutes.",
            f"Arithmetic: the first {settings['problems']} problems of `heldout_problems()`, default "
            f"sampler; code NLL: {settings['code_chunks']} held-out stdlib chunks x {settings['mc_num']} "
            f"Monte-Carlo samples; top-1 / KL: masked positions at mask ratios "
            f"{', '.join(map(str, settings['fidelity_ratios']))} against the float model (mean over ratios "
            "and over arithmetic and code inputs). Quantize s: calibration + quantization wall time.",
            *(
                []
                if raw.get("complete", True)
                else ["", "**Partial**: the run was stopped before its last cell."]
            ),
        ]
    )


def _machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def _flags(args: argparse.Namespace) -> list[str]:
    """The non-default flags of this run, to print the exact regeneration command."""
    flags = []
    defaults = _defaults()
    for key in (
        "matrix",
        "models",
        "methods",
        "settings",
        "problems",
        "code_chunks",
        "mc_num",
        "calib_samples",
    ):
        value = getattr(args, key)
        default = MODELS[args.matrix] if key == "models" else getattr(defaults, key)
        if value != default:
            shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
            flags.append(f"--{key.replace('_', '-')} {shown}")
    return flags


def _defaults() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([])


def _cells(args: argparse.Namespace) -> list[Cell]:
    cells = {"main": default_cells, "qdlm": qdlm_cells, "moe": moe_cells}[args.matrix](tuple(args.models))
    if args.methods:
        cells = [c for c in cells if c.recipe in args.methods]
    if args.settings:
        cells = [c for c in cells if c.setting in args.settings]
    if not cells:
        raise ValueError("no cell of the matrix matches --methods / --settings; see `dllmq results --help`")
    return cells


def _settings(args: argparse.Namespace) -> EvalSettings:
    """`EvalSettings` with the flags given on the command line (its defaults for the others)."""
    given = {k: getattr(args, k) for k in ("problems", "code_chunks", "mc_num", "calib_samples")}
    return EvalSettings(**{k: v for k, v in given.items() if v is not None})


def _key(cell: dict) -> tuple[str, str, str]:
    return (cell["model"], cell["recipe"], cell["setting"])


def _previous(args: argparse.Namespace, json_path: Path, settings_record: dict) -> dict | None:
    """The raw record a stopped run left in ``json_path`` (``--resume``), checked against this run."""
    if not args.resume:
        return None
    if not json_path.is_file():
        print(f"--resume: no {json_path} yet; starting from the first cell", flush=True)
        return None
    previous = json.loads(json_path.read_text(encoding="utf-8"))
    if previous.get("matrix", "main") != args.matrix or previous["settings"] != settings_record:
        raise ValueError(
            f"--resume: {json_path} holds a run of matrix {previous.get('matrix', 'main')!r} with settings "
            f"{previous['settings']}, not {args.matrix!r} with {settings_record}; pass the same flags as "
            "that run, or another --json path to start afresh"
        )
    return previous


def _measure_all(args: argparse.Namespace, json_path: Path) -> dict:
    """Run every selected cell, rewriting ``json_path`` after each one; returns the raw record that
    `_render` turns into markdown."""
    settings = _settings(args)
    settings_record = {**vars(settings), "fidelity_ratios": list(settings.fidelity_ratios)}
    previous = _previous(args, json_path, settings_record)
    cells = _cells(args)
    done = {_key(c): c for c in previous["cells"]} if previous else {}
    earlier_seconds = previous["seconds"] if previous else 0.0
    start = time.perf_counter()
    raw = {
        "command": " ".join(["uv run dllmq results", *_flags(args)]),
        "matrix": args.matrix,
        "date": datetime.date.today().isoformat(),
        "machine": _machine(),
        "settings": settings_record,
        "seconds": earlier_seconds,
        "complete": False,
        "floats": {},
        "cells": [],
    }
    references = {}
    bar = tqdm(total=len(args.models) + len(cells), unit="cell", disable=args.no_progress, leave=False)
    with bar:
        for model in args.models:
            bar.set_description(f"{model} float")
            references[model] = load_any(model, dtype=torch.float32)
            known = previous["floats"].get(model) if previous else None
            reference = references[model]
            floats = CellResult(**known) if known else measure(reference, Cell(model, "float", "-"), settings)
            raw["floats"][model] = floats.to_dict()
            bar.write(f"{model} float: {floats.exact:.1%} exact, code NLL {floats.code_nll:.3f}")
            bar.update()
        for i, cell in enumerate(cells, 1):
            bar.set_description(f"{cell.model} {cell.recipe} {cell.setting}")
            kept = done.get((cell.model, cell.recipe, cell.setting))
            result = CellResult(**kept) if kept else run_cell(cell, settings, references[cell.model])
            raw["cells"].append(result.to_dict())
            raw["seconds"] = earlier_seconds + time.perf_counter() - start
            _write_atomic(json_path, json.dumps(raw, indent=1) + "\n")
            bar.write(
                f"[{i}/{len(cells)}] {cell.model} {cell.recipe} {cell.setting}: {result.exact:.1%} exact, "
                f"NLL {result.code_nll:.3f}, top-1 {result.top1:.1%}, KL {result.kl:.4f}, "
                f"{result.seconds:.1f} s quantize ({raw['seconds']:.0f} s so far{', kept' if kept else ''})"
            )
            bar.update()
    raw["complete"] = True
    return raw


def merge_runs(raws: list[dict]) -> dict:
    """One raw record of several runs made side by side (e.g. one per model): their floats and cells
    together, every command, and the longest wall time. The runs must share the evaluation settings and
    must not measure the same cell twice."""
    first = raws[0]
    for raw in raws[1:]:
        if raw["settings"] != first["settings"]:
            raise ValueError(
                f"the runs used different evaluation settings ({first['settings']} vs {raw['settings']}); "
                "merge only runs made with the same --problems / --code-chunks / --mc-num"
            )
    keys = [(c["model"], c["recipe"], c["setting"]) for raw in raws for c in raw["cells"]]
    keys += [(model, "float", "-") for raw in raws for model in raw["floats"]]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"these cells were measured by more than one run: {repeated}")
    if len(raws) == 1:
        return first
    machines = sorted({raw["machine"] for raw in raws})
    return {
        "command": [raw["command"] for raw in raws],
        "date": max(raw["date"] for raw in raws),
        "machine": "; ".join(machines),
        "settings": first["settings"],
        "seconds": max(raw["seconds"] for raw in raws),
        "complete": all(raw.get("complete", True) for raw in raws),
        "floats": {m: r for raw in raws for m, r in raw["floats"].items()},
        "cells": [c for raw in raws for c in raw["cells"]],
    }


def _render(raw: dict, out: Path) -> None:
    """Replace everything after `MARKER` in ``out`` with the tables of ``raw``."""
    floats = {m: CellResult(**r) for m, r in raw["floats"].items()}
    results = [CellResult(**r) for r in raw["cells"]]
    problems = raw["settings"]["problems"]
    generated = render_results(floats, results, problems, _header(raw), raw.get("matrix", "main"))
    previous = out.read_text(encoding="utf-8") if out.is_file() else "# Results\n\n"
    kept = previous.split(MARKER)[0].rstrip() + "\n\n"
    _write_atomic(out, kept + generated + "\n")


def run(args: argparse.Namespace) -> int:
    args.out = args.out or OUT[args.matrix]
    args.models = args.models or MODELS[args.matrix]
    if args.from_json is not None:
        raws = [json.loads(path.read_text(encoding="utf-8")) for path in args.from_json]
        _render(merge_runs(raws), args.out)
        print(f"re-rendered {args.out} from {', '.join(map(str, args.from_json))}")
        return 0
    json_path = args.json or args.out.with_suffix(".json")
    raw = _measure_all(args, json_path)
    _write_atomic(json_path, json.dumps(raw, indent=1) + "\n")
    _render(raw, args.out)
    print(f"wrote {args.out} and {json_path} in {raw['seconds'] / 60:.1f} minutes")
    return 0
