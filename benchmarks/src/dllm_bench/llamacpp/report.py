"""The markdown table of the llama.cpp benchmark's results files of one model (``python -m
dllm_bench.llamacpp.report A.json [B.json ...]``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["table"]


def table(*parts: dict[str, Any]) -> str:
    """One markdown table of one or more results files of the same model and problems: dllmq's PyTorch
    sampler first, then every row in run order, with exact answers, answers identical to dllmq's, file size
    (MiB) and the CLI's ms per step (mean over problems).

    Raises:
        ValueError: the files differ in model, problem count or sampler.
    """
    results = parts[0]
    for other in parts[1:]:
        for key in ("model", "problems", "sampler"):
            if other["meta"][key] != results["meta"][key]:
                raise ValueError(
                    f"results files differ in {key}: {results['meta'][key]} vs {other['meta'][key]}"
                )
    rows = {label: row for part in parts for label, row in part["rows"].items()}
    meta, ref = results["meta"], results["dllmq"]
    n = ref["n"]
    lines = [
        f"{meta['model']}, first {n} held-out problems, llama-diffusion-cli sampler `{meta['sampler']}`",
        "",
        "| runtime / file | exact | same answer as dllmq | file MiB | ms/step |",
        "|---|---|---|---|---|",
        f"| dllmq generate (PyTorch, f32) | {ref['exact']}/{n} ({ref['exact'] / n:.1%}) | - | - | - |",
    ]
    for label, row in rows.items():
        done = row.get("done", 0)
        partial = "" if done == n else f" (partial: {done} run)"
        lines.append(
            f"| {label}{partial} | {row['exact']}/{done} ({row['exact'] / max(1, done):.1%}) "
            f"| {row.get('same_as_dllmq', '-')}/{done} | {row['key']['bytes'] / 2**20:.2f} "
            f"| {row['ms_per_step']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(*(json.loads(Path(name).read_text()) for name in sys.argv[1:])))
