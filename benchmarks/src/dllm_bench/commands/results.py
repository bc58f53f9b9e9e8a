"""``dllmq results``: run the method x bit-setting matrix on the tiny models and rewrite docs/results.md.

Everything after the ``<!-- generated -->`` line of the output file is replaced (the hand-written text
above it stays); the raw numbers go to a JSON file next to it. The default budget (128 problems, every
cell of `dllm_bench.results.default_cells`) is sized to finish within an hour on a 2-core CPU.
``--from-json FILE`` re-renders the markdown from a previous run's raw numbers without running anything.

The JSON is rewritten after every cell (marked ``"complete": false`` until the last one), so a run that is
stopped keeps what it measured; ``--resume`` continues such a run from its JSON, skipping the cells it
already holds (it refuses a JSON made with other evaluation settings or another matrix).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch

from dllm_bench.loading import load_any
from dllm_bench.results import (
    Cell,
    CellResult,
    EvalSettings,
    default_cells,
    measure,
    qdlm_cells,
    render_results,
    run_cell,
)

HELP = "Quantize the tiny models with every method at every bit setting and rewrite docs/results.md."

MARKER = "<!-- generated -->"
_OUT = {"main": Path("docs/results.md"), "qdlm": Path("docs/results-qdlm.md")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["tiny-llada", "tiny-dream"])
    parser.add_argument("--methods", nargs="+", help="only these recipes (default: all of the matrix)")
    parser.add_argument("--settings", nargs="+", help="only these bit settings (default: all six)")
    parser.add_argument("--problems", type=int, default=EvalSettings.problems, help="held-out problems")
    parser.add_argument("--code-chunks", type=int, default=EvalSettings.code_chunks)
    parser.add_argument("--mc-num", type=int, default=EvalSettings.mc_num)
    parser.add_argument("--calib-samples", type=int, help="calibration states per recipe (default: recipe's)")
    parser.add_argument(
        "--matrix",
        choices=sorted(_OUT),
        default="main",
        help="main: every method at every bit setting (docs/results.md); qdlm: the seed study's presets "
        "(docs/results-qdlm.md)",
    )
    parser.add_argument("--out", type=Path, help="markdown file to update (default: the matrix's page)")
    parser.add_argument("--json", type=Path, help="raw numbers (default: --out with .json)")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="only re-render --out from the raw numbers previous runs wrote (no quantization); several "
        "files, e.g. one run per model side by side, are merged",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run: keep the cells its --json file already holds and measure the rest",
    )


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
        if value != getattr(defaults, key):
            shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
            flags.append(f"--{key.replace('_', '-')} {shown}")
    return flags


def _defaults() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([])


def _cells(args: argparse.Namespace) -> list[Cell]:
    cells = (qdlm_cells if args.matrix == "qdlm" else default_cells)(tuple(args.models))
    if args.methods:
        cells = [c for c in cells if c.recipe in args.methods]
    if args.settings:
        cells = [c for c in cells if c.setting in args.settings]
    if not cells:
        raise ValueError("no cell of the matrix matches --methods / --settings; see `dllmq results --help`")
    return cells


def _settings(args: argparse.Namespace) -> EvalSettings:
    return EvalSettings(
        problems=args.problems,
        code_chunks=args.code_chunks,
        mc_num=args.mc_num,
        calib_samples=args.calib_samples,
    )


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
    for model in args.models:
        references[model] = load_any(model, dtype=torch.float32)
        known = previous["floats"].get(model) if previous else None
        floats = (
            CellResult(**known) if known else measure(references[model], Cell(model, "float", "-"), settings)
        )
        raw["floats"][model] = floats.to_dict()
        print(f"{model} float: {floats.exact:.1%} exact, code NLL {floats.code_nll:.3f}", flush=True)
    for i, cell in enumerate(cells, 1):
        kept = done.get((cell.model, cell.recipe, cell.setting))
        result = CellResult(**kept) if kept else run_cell(cell, settings, references[cell.model])
        raw["cells"].append(result.to_dict())
        raw["seconds"] = earlier_seconds + time.perf_counter() - start
        _write_atomic(json_path, json.dumps(raw, indent=1) + "\n")
        print(
            f"[{i}/{len(cells)}] {cell.model} {cell.recipe} {cell.setting}: {result.exact:.1%} exact, "
            f"NLL {result.code_nll:.3f}, top-1 {result.top1:.1%}, KL {result.kl:.4f}, "
            f"{result.seconds:.1f} s quantize ({raw['seconds']:.0f} s so far{', kept' if kept else ''})",
            flush=True,
        )
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
    args.out = args.out or _OUT[args.matrix]
    if args.from_json is not None:
        missing = [str(path) for path in args.from_json if not path.is_file()]
        if missing:
            raise ValueError(f"no such --from-json file: {', '.join(missing)} (a run writes one with --json)")
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
