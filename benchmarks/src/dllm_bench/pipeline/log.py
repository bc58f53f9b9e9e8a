"""The per-module record of a quantization run, written as CSV.

One row per quantized module and per transform: ``block`` (-1 for whole-model transforms), ``module``
(qualified name, or the transformed group), ``method``, ``loss`` (the quantizer's layer objective
``tr((W - Q) H (W - Q)^T)`` on the calibration Hessian; AWQ: the group's output error; IA-AQ: the
attention-weighted V error; empty where no statistic exists), ``rel_weight_error``
(``|W - Q|_F^2 / |W|_F^2``) and ``seconds`` (wall time of the step for that module).
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, fields
from pathlib import Path

from dllm_calib import LogRow

__all__ = ["LOG_COLUMNS", "LogRow", "write_log"]

LOG_COLUMNS = tuple(f.name for f in fields(LogRow))


def _csv_values(row: LogRow) -> dict[str, str]:
    """The row as CSV strings (NaN as an empty cell, floats with 6 significant digits)."""
    out = {}
    for key, value in asdict(row).items():
        if isinstance(value, float):
            out[key] = "" if math.isnan(value) else f"{value:.6g}"
        else:
            out[key] = str(value)
    return out


def write_log(rows: list[LogRow], path: str | Path) -> Path:
    """Write ``rows`` as CSV (header ``LOG_COLUMNS``) to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(LOG_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow(_csv_values(row))
    return path
