"""The llama.cpp runtime benchmark: held-out arithmetic problems through ``llama-diffusion-cli``, one
problem per run, 1 thread, for a list of GGUF files; exact answers scored as ``dllmq eval`` scores them.

Rows are written to a JSON file after every few problems (an atomic rewrite) and an interrupted run
resumes where it stopped when started again with the same output file; a row whose file, sampler or problem
count changed is started over.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dllm_sampler.atomic import atomic_file
from dllm_sampler.tasks.arithmetic import Problem, format_prompt, parse_answer
from dllm_sampler.tasks.evaluate import GEN_LENGTH
from tokenizers import Tokenizer

from dllm_bench.llamacpp.command import SamplerSettings, diffusion_command
from dllm_bench.llamacpp.output import DiffusionOutput, parse_diffusion_output
from dllm_bench.machine import cpu_name

__all__ = ["Row", "load_results", "machine", "prompt_token_count", "run_cli", "run_row", "save_results"]

SAVE_EVERY = 10
"""Problems between two rewrites of the results file."""


@dataclass(frozen=True)
class Row:
    """One configuration: a label, the GGUF file and the sampler flags."""

    label: str
    gguf: Path
    sampler: SamplerSettings


def prompt_token_count(tokenizer: Tokenizer, problem: Problem) -> int:
    """Tokens of the prompt llama.cpp builds for ``problem``: BOS plus ``format_prompt(problem)``."""
    return 1 + len(tokenizer.encode(format_prompt(problem), add_special_tokens=False).ids)


def machine() -> str:
    """CPU model and core count of this machine, for the report."""
    import os

    return f"{cpu_name()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


def load_results(path: Path) -> dict[str, Any]:
    """The results file, or an empty one."""
    return json.loads(path.read_text()) if path.is_file() else {"meta": {}, "rows": {}}


def save_results(path: Path, results: dict[str, Any]) -> None:
    """Rewrite the results file atomically."""
    with atomic_file(path) as f:
        json.dump(results, f, indent=1)
        f.write("\n")


def _row_key(row: Row, n: int) -> dict[str, Any]:
    return {"gguf": str(row.gguf), "bytes": row.gguf.stat().st_size, "sampler": row.sampler.__dict__, "n": n}


def run_row(
    results: dict[str, Any],
    out: Path,
    row: Row,
    binary: Path,
    arch: str,
    tokenizer: Tokenizer,
    problems: Sequence[Problem],
    reference: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) one row over ``problems`` and return its record.

    The record holds ``exact`` (correct answers), ``n``, ``bytes`` (file size), ``ms_per_step`` (mean over
    problems of the CLI's own time per step), ``same_as_dllmq`` (answers identical to ``reference``, when
    given) and the per-problem ``texts``.
    """
    key = _row_key(row, len(problems))
    record = results["rows"].get(row.label)
    if record is None or record.get("key") != key:
        record = {"key": key, "texts": [], "ms": [], "wall_s": []}
        results["rows"][row.label] = record
    start = len(record["texts"])
    for i in range(start, len(problems)):
        problem = problems[i]
        argv = diffusion_command(
            binary,
            row.gguf,
            problem.text,
            prompt_token_count(tokenizer, problem),
            GEN_LENGTH,
            arch,
            row.sampler,
        )
        began = time.perf_counter()
        parsed = run_cli(argv, row.label)
        wall = time.perf_counter() - began
        record["texts"].append(parsed.text)
        record["ms"].append(parsed.ms_per_step)
        record["wall_s"].append(round(wall, 3))
        if (i + 1) % SAVE_EVERY == 0 or i + 1 == len(problems):
            _summarize(record, problems, reference)
            save_results(out, results)
    _summarize(record, problems, reference)
    save_results(out, results)
    return record


def run_cli(argv: list[str], label: str, attempts: int = 3) -> DiffusionOutput:
    """Run the CLI and parse its output, retrying when the output is cut short.

    llama.cpp logs through a background thread, and the process sometimes exits before the last lines (the
    timing line and the text) are written; the draws are seeded, so a rerun decodes the same tokens.
    """
    for attempt in range(attempts):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        log = done.stdout + done.stderr
        if done.returncode != 0:
            raise RuntimeError(f"{label}: llama-diffusion-cli exit {done.returncode}: {log[-2000:]}")
        try:
            return parse_diffusion_output(log)
        except ValueError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _summarize(record: dict[str, Any], problems: Sequence[Problem], reference: Sequence[str] | None) -> None:
    texts = record["texts"]
    record["done"] = len(texts)
    record["exact"] = sum(parse_answer(t) == p.answer for t, p in zip(texts, problems, strict=False))
    record["ms_per_step"] = round(sum(record["ms"]) / max(1, len(record["ms"])), 2)
    if reference is not None:
        record["same_as_dllmq"] = sum(t == r for t, r in zip(texts, reference, strict=False))
