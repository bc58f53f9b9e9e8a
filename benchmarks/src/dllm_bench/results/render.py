"""Markdown for docs/results.md from measured `CellResult`s: per model, a compact exact-match grid
(method x setting), the full table, and comparisons of the dLLM-specific methods with the baselines."""

from __future__ import annotations

from collections.abc import Sequence

from dllm_bench.results.matrix import (
    ACTIVATION_METHODS,
    ACTIVATION_SETTINGS,
    MOE_ACTIVATION_SETTINGS,
    MOE_METHODS,
    MOE_WEIGHT_SETTINGS,
    QDLM_ACTIVATION_METHODS,
    QDLM_ACTIVATION_SETTINGS,
    QDLM_WEIGHT_ONLY_METHODS,
    WEIGHT_ONLY_METHODS,
    WEIGHT_ONLY_SETTINGS,
    CellResult,
)

__all__ = ["render_results"]

_DLLM_METHODS = {"dllmquant", "dllmquant-awq", "quant-dllm"}
_GRIDS = {
    "main": (WEIGHT_ONLY_METHODS, WEIGHT_ONLY_SETTINGS, ACTIVATION_METHODS, ACTIVATION_SETTINGS),
    "qdlm": (QDLM_WEIGHT_ONLY_METHODS, ("W4A16",), QDLM_ACTIVATION_METHODS, QDLM_ACTIVATION_SETTINGS),
    "moe": (MOE_METHODS, MOE_WEIGHT_SETTINGS, MOE_METHODS, MOE_ACTIVATION_SETTINGS),
}
"""Per matrix: the weight-only methods and settings, then the weight-and-activation ones."""


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _grid(results: Sequence[CellResult], methods: Sequence[str], settings: Sequence[str]) -> list[str]:
    found = {(r.recipe, r.setting): r for r in results}
    lines = ["| method | " + " | ".join(settings) + " |", "|---" * (len(settings) + 1) + "|"]
    for method in methods:
        cells = [_pct(found[(method, s)].exact) if (method, s) in found else "n/a" for s in settings]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _full_table(results: Sequence[CellResult], float_result: CellResult) -> list[str]:
    lines = [
        "| method | setting | exact % | chars % | code NLL | ΔNLL | top-1 % | KL (nats) | quantize s |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| float | - | {_pct(float_result.exact)} | {_pct(float_result.chars)} | "
        f"{float_result.code_nll:.3f} | - | - | - | - |",
    ]
    for r in results:
        kl = "-" if r.kl is None else f"{r.kl:.4f}"
        lines.append(
            f"| {r.recipe} | {r.setting} | {_pct(r.exact)} | {_pct(r.chars)} | {r.code_nll:.3f} | "
            f"{r.code_nll - float_result.code_nll:+.3f} | {_pct(r.top1)} | {kl} | {r.seconds:.1f} |"
        )
    return lines


def _comparisons(results: Sequence[CellResult]) -> list[str]:
    """One line per dLLM-specific cell: its fidelity (KL to the float model) against the baseline with the
    lowest KL at the same setting, with exact match and answer characters alongside.

    KL decides the verdict because it separates methods even when exact match is near zero: "helps" below
    0.9x the best baseline's KL, "hurts" above 1.1x, else "ties".
    """
    lines = []
    for setting in dict.fromkeys(r.setting for r in results):
        at = [r for r in results if r.setting == setting and r.kl is not None]
        baselines = [r for r in at if r.recipe not in _DLLM_METHODS]
        if not baselines:
            continue
        best = min(baselines, key=lambda r: r.kl)
        for r in (r for r in at if r.recipe in _DLLM_METHODS):
            ratio = r.kl / best.kl if best.kl > 0 else float("inf") if r.kl > 0 else 1.0
            verdict = "helps" if ratio < 0.9 else "hurts" if ratio > 1.1 else "ties"
            lines.append(
                f"- {setting}: {r.recipe} KL {r.kl:.4f} vs the best baseline {best.recipe} {best.kl:.4f} "
                f"({ratio:.2f}x): **{verdict}**; exact {_pct(r.exact)}% vs {_pct(best.exact)}%, answer "
                f"characters {_pct(r.chars)}% vs {_pct(best.chars)}%."
            )
    return lines


def render_results(
    floats: dict[str, CellResult],
    results: Sequence[CellResult],
    problems: int,
    header: str,
    matrix: str = "main",
) -> str:
    """The generated part of docs/results.md: ``header`` (how it was produced), then one section per model.

    Args:
        floats: model name -> the float model's scores.
        results: every quantized cell, any order (grouped by model here, in run order).
        problems: held-out arithmetic problems each cell was scored on.
        header: markdown put first (command, machine, date, budget).
        matrix: ``"main"`` (docs/results.md), ``"qdlm"`` (docs/results-qdlm.md) or ``"moe"``
            (docs/results-llada2.md): which grids to draw.
    """
    weight_methods, weight_settings, act_methods, act_settings = _GRIDS[matrix]
    out = [header, ""]
    for model, float_result in floats.items():
        mine = [r for r in results if r.model == model]
        out += [
            f"## {model}",
            "",
            f"Float: {_pct(float_result.exact)}% exact on {problems} held-out problems, "
            f"{_pct(float_result.chars)}% answer characters, "
            f"code NLL {float_result.code_nll:.3f} nats/token.",
            "",
            "Exact-match accuracy (%), weight-only settings:",
            "",
            *_grid(mine, weight_methods, weight_settings),
            "",
            "Exact-match accuracy (%), weight and activation settings:",
            "",
            *_grid(mine, act_methods, act_settings),
            "",
            "All measurements:",
            "",
            *_full_table(mine, float_result),
            "",
            "dLLM-specific methods against the most faithful baseline at the same setting:",
            "",
            *(_comparisons(mine) or ["- (no dLLM-specific cell ran)"]),
            "",
        ]
    return "\n".join(out)
