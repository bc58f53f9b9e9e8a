"""``dllmq_provenance.json``: how a quantized checkpoint was made (recipe, seeds, calibration, versions)."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PROVENANCE_FILE", "TRACKED_PACKAGES", "QuantProvenance", "package_versions", "read_provenance"]

PROVENANCE_FILE = "dllmq_provenance.json"
TRACKED_PACKAGES = (
    "dllm-weightquant",
    "dllm-kernels",
    "dllm-sampler",
    "dllm-calib",
    "dllm-actquant",
    "dllm-bench",
    "torch",
    "safetensors",
    "compressed-tensors",
    "numba",
    "triton",
)


def package_versions() -> dict[str, str | None]:
    """Installed version of each tracked package (None when not installed)."""
    out: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass(frozen=True)
class QuantProvenance:
    """What the caller knows about the run; package versions and the time are added on write.

    Attributes:
        model: the float model that was quantized (a shipped name or the checkpoint folder), "" if unknown.
        recipe: the ordered methods and their configs, e.g. ``[{"method": "gptq", "config": {...}}]``.
        seeds: named seeds (``{"calibration": 0, "torch": 0}``).
        calibration: description of the calibration set (e.g. ``dllm_calib``'s provenance dict: builder,
            source, number of states, sequence length, token weighting).
        notes: free text.
    """

    model: str = ""
    recipe: list[dict[str, Any]] = field(default_factory=list)
    seeds: dict[str, int] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON content: the fields plus ``packages`` and ``created`` (UTC, ISO 8601)."""
        return {
            "model": self.model,
            "recipe": self.recipe,
            "seeds": self.seeds,
            "calibration": self.calibration,
            "notes": self.notes,
            "packages": package_versions(),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }

    def write(self, folder: Path) -> None:
        """Write ``dllmq_provenance.json`` into ``folder`` (raises ``TypeError`` for non-JSON content)."""
        (folder / PROVENANCE_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def read_provenance(folder: str | Path) -> dict[str, Any]:
    """The provenance dict of a quantized checkpoint folder."""
    return json.loads((Path(folder) / PROVENANCE_FILE).read_text(encoding="utf-8"))
