"""Per-expert calibration coverage of a mixture-of-experts run, read from its log rows.

A routed expert's linears log the calibration tokens behind their Hessian (``LogRow.tokens``: the tokens
the router sent to that expert, with a nonzero weight under the quantizer's token weighting), and a
starved expert's method label says which policy replaced its own Hessian (``"gptq(starved:shared)"``,
``"rtn(starved)"``). `expert_coverage` gathers them per (layer, expert); `format_coverage` prints one
compact line per layer. Runs without Hessians (RTN) or without routed layers have no coverage.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from dllm_calib import LogRow
from dllm_sampler import DiffusionLM

__all__ = ["LayerCoverage", "expert_coverage", "format_coverage"]


@dataclass(frozen=True)
class LayerCoverage:
    """One routed layer: ``tokens[e]`` calibration tokens seen by expert ``e``, and the starved experts."""

    layer: int
    tokens: tuple[int, ...]
    starved: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        return {"layer": self.layer, "tokens": list(self.tokens), "starved": list(self.starved)}


def expert_coverage(rows: list[LogRow], dlm: DiffusionLM) -> list[LayerCoverage]:
    """The coverage of every routed layer whose expert gate linears were quantized with a Hessian."""
    by_name = {(row.block, row.module): row for row in rows}
    out = []
    for block in dlm.topology:
        if not block.routes:
            continue
        rows_of = [
            by_name.get((block.index, block.names[f"expert.{e}.gate"])) for e in range(block.num_experts)
        ]
        found = [row for row in rows_of if row is not None and row.tokens >= 0]
        if len(found) < block.num_experts:
            continue
        starved = tuple(e for e, row in enumerate(found) if "starved" in row.method)
        out.append(LayerCoverage(block.index, tuple(row.tokens for row in found), starved))
    return out


def format_coverage(coverage: list[LayerCoverage]) -> list[str]:
    """One line per routed layer: min / median / max tokens per expert and the starved experts."""
    lines = []
    for layer in coverage:
        t = layer.tokens
        starved = ", ".join(str(e) for e in layer.starved) or "none"
        lines.append(
            f"  layer {layer.layer:>3}: {len(t)} experts, tokens min {min(t)} / median "
            f"{statistics.median(t):g} / max {max(t)}; starved: {starved}"
        )
    return lines
