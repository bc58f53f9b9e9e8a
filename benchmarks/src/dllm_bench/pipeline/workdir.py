"""Per-block checkpoints of a quantization run, so an interrupted run resumes where it stopped.

Layout of a work directory::

    manifest.json      what the run is (recipe, model config, dtype, calibration): a resume must match
    calibration/       the CalibrationSet (dllm_calib format), so a resume sees the same states
    global.pt          the model after the whole-model transforms (only when the recipe has some)
    block-0003.pt      block 3 after quantization: the module (with its run-time wrappers) and its log rows
    hidden-0004.pt     the inputs of block 4, the next to quantize, per calibration batch
    progress.json      {"global_done": bool, "next_block": n}

Every file is written to a temporary name and renamed into place, and ``progress.json`` is written last,
so a run killed at any point resumes from the last completed block. ``*.pt`` files are pickles written by
this code (``torch.load(weights_only=False)``); only resume from work directories you created.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from dllm_calib import CalibrationSet, LogRow
from torch import nn

from dllm_bench.pipeline.feed import HiddenCache

__all__ = ["BlockCheckpoint", "WorkDir"]


def _replace_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _save(obj: Any, path: Path) -> None:
    _replace_atomically(path, lambda tmp: torch.save(obj, tmp))


def _load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=False)


def _write_json(data: Any, path: Path) -> None:
    _replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


class BlockCheckpoint:
    """A quantized block: its module (with its run-time wrappers) and its log rows."""

    def __init__(self, module: nn.Module, rows: list[LogRow]) -> None:
        self.module, self.rows = module, rows


class WorkDir:
    """A run's work directory (see the module docstring).

    Args:
        path: the directory (created if missing).
        fingerprint: JSON-ready description of the run; an existing directory must hold the same one.

    Raises:
        ValueError: the directory belongs to a different run.
    """

    def __init__(self, path: str | Path, fingerprint: dict[str, Any]) -> None:
        self.path = Path(path).expanduser()
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = self.path / "manifest.json"
        canonical = json.loads(json.dumps(fingerprint, sort_keys=True))
        if manifest.is_file():
            stored = json.loads(manifest.read_text(encoding="utf-8"))
            if stored != canonical:
                changed = sorted(k for k in set(stored) | set(canonical) if stored.get(k) != canonical.get(k))
                raise ValueError(
                    f"work directory {self.path} belongs to another run (different {changed}); delete it or "
                    "choose another work directory"
                )
        else:
            _write_json(canonical, manifest)

    # ----- progress -------------------------------------------------------------------------------

    def progress(self) -> dict[str, Any]:
        """``{"global_done": bool, "next_block": int}`` (a fresh directory: nothing done)."""
        file = self.path / "progress.json"
        if not file.is_file():
            return {"global_done": False, "next_block": 0}
        return json.loads(file.read_text(encoding="utf-8"))

    def _set_progress(self, global_done: bool, next_block: int) -> None:
        _write_json({"global_done": global_done, "next_block": next_block}, self.path / "progress.json")

    # ----- calibration and the global stage ----------------------------------------------------------

    def calibration(self) -> CalibrationSet | None:
        """The saved calibration set, None before it was saved."""
        folder = self.path / "calibration"
        return CalibrationSet.load(folder) if (folder / "calibration.json").is_file() else None

    def save_calibration(self, cset: CalibrationSet) -> None:
        cset.save(self.path / "calibration")

    def save_global(self, model: nn.Module | None, rows: list[LogRow]) -> None:
        """Record the end of the global stage: the transformed model (None if nothing changed it)."""
        if model is not None:
            _save(model, self.path / "global.pt")
        _write_json([asdict(r) for r in rows], self.path / "global_rows.json")
        self._set_progress(True, 0)

    def load_global(self) -> tuple[nn.Module | None, list[LogRow]]:
        """The transformed model (None when the recipe has no global transform) and its log rows."""
        file = self.path / "global.pt"
        rows = json.loads((self.path / "global_rows.json").read_text(encoding="utf-8"))
        return (_load(file) if file.is_file() else None), [LogRow(**r) for r in rows]

    # ----- blocks -----------------------------------------------------------------------------------

    def _block_file(self, index: int) -> Path:
        return self.path / f"block-{index:04d}.pt"

    def save_block(self, index: int, checkpoint: BlockCheckpoint, next_inputs: HiddenCache | None) -> None:
        """Record block ``index`` as done, with the inputs of block ``index + 1`` (None after the last)."""
        _save(
            {"module": checkpoint.module, "rows": [asdict(r) for r in checkpoint.rows]},
            self._block_file(index),
        )
        if next_inputs is not None:
            _save(next_inputs.state(), self._hidden_file(index + 1))
        self._set_progress(True, index + 1)
        self._hidden_file(index).unlink(missing_ok=True)

    def load_block(self, index: int) -> BlockCheckpoint:
        data = _load(self._block_file(index))
        return BlockCheckpoint(data["module"], [LogRow(**r) for r in data["rows"]])

    def _hidden_file(self, index: int) -> Path:
        return self.path / f"hidden-{index:04d}.pt"

    def load_inputs(self, index: int) -> HiddenCache:
        """The saved inputs of block ``index`` (written when block ``index - 1`` was completed)."""
        file = self._hidden_file(index)
        if not file.is_file():
            raise ValueError(
                f"{file} is missing although block {index - 1} is recorded as done; the work directory is "
                "inconsistent, delete it and start over"
            )
        return HiddenCache.from_state(_load(file))
