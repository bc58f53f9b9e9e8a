"""The results matrix of docs/results.md: method x bit setting on the tiny models, measured and rendered.

* `default_cells()` lists every (model, recipe, setting) cell; `run_cell` quantizes and scores one;
  `measure` scores any model (fidelity against a reference when given);
* `render_results` writes the markdown; `dllmq results` runs it all and rewrites the generated part of
  docs/results.md.
"""

from dllm_bench.results.matrix import (
    ACTIVATION_METHODS,
    ACTIVATION_SETTINGS,
    WEIGHT_ONLY_METHODS,
    WEIGHT_ONLY_SETTINGS,
    Cell,
    CellResult,
    EvalSettings,
    default_cells,
    measure,
    moe_cells,
    qdlm_cells,
    run_cell,
)
from dllm_bench.results.render import render_results

__all__ = [
    "ACTIVATION_METHODS",
    "ACTIVATION_SETTINGS",
    "WEIGHT_ONLY_METHODS",
    "WEIGHT_ONLY_SETTINGS",
    "Cell",
    "CellResult",
    "EvalSettings",
    "default_cells",
    "measure",
    "moe_cells",
    "qdlm_cells",
    "render_results",
    "run_cell",
]
