"""Per-block checkpoints of a quantization run, so an interrupted run resumes where it stopped.

Layout of a work directory (every file is safetensors or JSON: no Python object is ever deserialized)::

    manifest.json                 what the run is: recipe, model config, dtype, a digest of the source
                                  weights, calibration. A resume must match it exactly
    calibration/                  the CalibrationSet (dllm_calib format), so a resume sees the same states
    global.safetensors / .json    the model after the whole-model transforms, and their log rows
    block-0003.safetensors / .json  block 3 after quantization (`dllm_bench.pipeline.snapshot`) + log rows
    hidden-0004.safetensors / .json  the inputs of block 4, the next to quantize, per calibration batch
    progress.json                 {"global_done": bool, "next_block": n}
    .lock                         held by the run using the directory (`dllm_bench.pipeline.lock`)

The resume contract (docs/resume.md): a run resumes only a directory whose manifest equals its own
fingerprint (same recipe, scheme, model config and weights, dtype and calibration); any difference is
refused with the keys that differ. Every file is written to a unique temporary name and renamed into place,
and ``progress.json`` is written last, so a run killed at any point resumes from the last completed block.
Only files that this layout names are read; anything else in the folder is ignored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from dllm_calib import CalibrationSet, LogRow
from dllm_sampler import DiffusionLM
from dllm_sampler.atomic import atomic_file, atomic_path
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dllm_bench.pipeline.feed import HiddenCache
from dllm_bench.pipeline.snapshot import SnapshotError, restore_block, restore_model, save_block, save_model

__all__ = ["WorkDir", "weights_digest"]

MANIFEST, PROGRESS = "manifest.json", "progress.json"


def _write_json(data: Any, path: Path) -> None:
    with atomic_file(path) as fh:
        fh.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def weights_digest(dlm: DiffusionLM) -> str:
    """blake2b (hex, 32 bytes) over every tensor of ``dlm.model``'s state: names, dtypes, shapes, bytes."""
    digest = hashlib.blake2b(digest_size=32)
    for name, tensor in sorted(dlm.model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{list(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class WorkDir:
    """A run's work directory (see the module docstring). Hold its `FolderLock` while using it.

    Args:
        path: the directory (created if missing).
        fingerprint: JSON-ready description of the run; an existing directory must hold the same one.

    Raises:
        ValueError: the directory belongs to a different run (the message names what differs).
    """

    def __init__(self, path: str | Path, fingerprint: dict[str, Any]) -> None:
        self.path = Path(path).expanduser()
        self.path.mkdir(parents=True, exist_ok=True)
        for leftover in self.path.glob(".*.tmp"):  # `atomic_path` files a killed run never renamed
            leftover.unlink(missing_ok=True)
        manifest = self.path / MANIFEST
        canonical = json.loads(json.dumps(fingerprint, sort_keys=True))
        if manifest.is_file():
            stored = _read_json(manifest)
            if stored != canonical:
                changed = sorted(k for k in set(stored) | set(canonical) if stored.get(k) != canonical.get(k))
                raise ValueError(
                    f"work directory {self.path} was left by another run (different {', '.join(changed)}); "
                    "refusing to resume it. Pass --restart to discard it, or choose another --work-dir"
                )
        else:
            _write_json(canonical, manifest)

    @staticmethod
    def found(path: str | Path) -> str | None:
        """What an earlier run left in ``path`` (one line), None when it holds no run."""
        folder = Path(path).expanduser()
        if not (folder / MANIFEST).is_file():
            return None
        progress = _progress(folder)
        if progress["global_done"]:
            return f"global stage done, {progress['next_block']} block(s) done"
        return "calibration saved" if (folder / "calibration").is_dir() else "nothing completed yet"

    # ----- progress -------------------------------------------------------------------------------

    def progress(self) -> dict[str, Any]:
        """``{"global_done": bool, "next_block": int}`` (a fresh directory: nothing done)."""
        return _progress(self.path)

    def _set_progress(self, global_done: bool, next_block: int) -> None:
        _write_json({"global_done": global_done, "next_block": next_block}, self.path / PROGRESS)

    # ----- calibration and the global stage ----------------------------------------------------------

    def calibration(self) -> CalibrationSet | None:
        """The saved calibration set, None before it was saved."""
        folder = self.path / "calibration"
        return CalibrationSet.load(folder) if (folder / "calibration.json").is_file() else None

    def save_calibration(self, cset: CalibrationSet) -> None:
        cset.save(self.path / "calibration")

    def save_global(self, dlm: DiffusionLM | None, rows: list[LogRow]) -> None:
        """Record the end of the global stage: the transformed model (None if nothing changed it)."""
        extra = {"rows": [asdict(r) for r in rows]}
        if dlm is not None:
            save_model(dlm, self.path / "global", extra)
        else:
            _write_json({**extra, "unchanged": True}, self.path / "global.json")
        self._set_progress(True, 0)

    def load_global(self, dlm: DiffusionLM) -> list[LogRow]:
        """Put the transformed model saved by `save_global` into ``dlm`` (if one was saved); returns the
        global stage's log rows."""
        meta = _read_json(self.path / "global.json")
        if not meta.get("unchanged"):
            meta = restore_model(dlm, self.path / "global")
        return [LogRow(**r) for r in meta["rows"]]

    # ----- blocks -----------------------------------------------------------------------------------

    def save_block(
        self, dlm: DiffusionLM, index: int, rows: list[LogRow], next_inputs: HiddenCache | None
    ) -> None:
        """Record block ``index`` of ``dlm`` as done (with its log rows), with the inputs of block
        ``index + 1`` (None after the last)."""
        save_block(dlm, index, self._stem("block", index), {"rows": [asdict(r) for r in rows]})
        if next_inputs is not None:
            tensors, meta = next_inputs.to_tensors()
            stem = self._stem("hidden", index + 1)
            with atomic_path(stem.with_suffix(".safetensors")) as tmp:
                save_file(tensors, str(tmp))
            _write_json(meta, stem.with_suffix(".json"))
        self._set_progress(True, index + 1)
        for suffix in (".safetensors", ".json"):
            self._stem("hidden", index).with_suffix(suffix).unlink(missing_ok=True)

    def load_block(self, dlm: DiffusionLM, index: int) -> list[LogRow]:
        """Put block ``index`` saved by `save_block` back into ``dlm``; returns its log rows."""
        meta = restore_block(dlm, index, self._stem("block", index))
        return [LogRow(**r) for r in meta["rows"]]

    def _stem(self, kind: str, index: int) -> Path:
        return self.path / f"{kind}-{index:04d}"

    def load_inputs(self, index: int) -> HiddenCache:
        """The saved inputs of block ``index`` (written when block ``index - 1`` was completed)."""
        stem = self._stem("hidden", index)
        try:
            tensors = load_file(str(stem.with_suffix(".safetensors")))
            return HiddenCache.from_tensors(tensors, _read_json(stem.with_suffix(".json")))
        except (OSError, SafetensorError, KeyError, TypeError, ValueError) as err:
            raise SnapshotError(
                f"the inputs of block {index} ({stem}.*) are missing or unreadable although block "
                f"{index - 1} is recorded as done ({err}); the work directory is inconsistent: pass "
                "--restart (or delete it) and start over"
            ) from err


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SnapshotError(
            f"cannot read {path} ({err}); the work directory is inconsistent: pass --restart (or delete it) "
            "and start over"
        ) from err


def _progress(folder: Path) -> dict[str, Any]:
    file = folder / PROGRESS
    if not file.is_file():
        return {"global_done": False, "next_block": 0}
    return _read_json(file)
