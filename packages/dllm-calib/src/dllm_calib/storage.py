"""Save and load a `CalibrationSet` as a directory of safetensors + JSON.

Layout of ``<dir>/``:

- ``states.safetensors``: the states' tensors concatenated along one axis. ``input_ids`` int64 [T],
  ``attention_mask`` bool [T], ``is_masked`` bool [T], ``confidence`` float32 [T] (0 where a state has
  none), ``offsets`` int64 [N+1] (state i is ``[offsets[i], offsets[i+1])``), ``has_confidence`` bool [N],
  ``mask_ratio`` and ``t`` float64 [N], ``step`` and ``source_index`` int64 [N].
- ``calibration.json``: ``format``, ``version``, ``num_states``, ``mask_token_id``, ``provenance`` and the
  SHA-256 of ``states.safetensors`` (so a mismatched or damaged pair is detected on load).

Each file is written under a temporary name in the same directory and renamed into place (atomic on
POSIX), the tensors first and the JSON last, so neither file is ever seen half-written. If a save that
overwrites an older set is interrupted between the two renames, the checksum makes `load_calibration_set`
fail loudly instead of pairing old metadata with new tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from dllm_sampler.atomic import file_mode
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dllm_calib.state import CalibrationSet, CalibrationState, Provenance

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CorruptCalibrationSetError",
    "load_calibration_set",
    "save_calibration_set",
]

FORMAT_NAME = "dllm-calib/calibration-set"
FORMAT_VERSION = 1
_TENSORS = "states.safetensors"
_META = "calibration.json"
_KEYS = (
    "input_ids",
    "attention_mask",
    "is_masked",
    "confidence",
    "offsets",
    "has_confidence",
    "mask_ratio",
    "t",
    "step",
    "source_index",
)


class CorruptCalibrationSetError(ValueError):
    """A calibration-set directory whose files are unreadable or inconsistent."""


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it to ``path`` with the
    permissions the process umask gives a new file (not ``tempfile``'s owner-only mode)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_calibration_set(cset: CalibrationSet, path: str | Path) -> Path:
    """Write ``cset`` to the directory ``path`` (created if missing; existing set files are replaced).

    Raises:
        NotADirectoryError: if ``path`` exists and is not a directory.
    """
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            f"{root} exists and is not a directory; a calibration set is saved as a directory"
        )
    root.mkdir(parents=True, exist_ok=True)
    states = cset.states
    lengths = torch.tensor([s.length for s in states], dtype=torch.int64)
    offsets = torch.zeros(len(states) + 1, dtype=torch.int64)
    offsets[1:] = lengths.cumsum(0)
    tensors = {
        "input_ids": torch.cat([s.input_ids.cpu() for s in states]),
        "attention_mask": torch.cat([s.attention_mask.cpu() for s in states]),
        "is_masked": torch.cat([s.is_masked.cpu() for s in states]),
        "confidence": torch.cat(
            [s.confidence.cpu() if s.confidence is not None else torch.zeros(s.length) for s in states]
        ),
        "offsets": offsets,
        "has_confidence": torch.tensor([s.confidence is not None for s in states]),
        "mask_ratio": torch.tensor([s.mask_ratio for s in states], dtype=torch.float64),
        "t": torch.tensor([s.t for s in states], dtype=torch.float64),
        "step": torch.tensor([s.step for s in states], dtype=torch.int64),
        "source_index": torch.tensor([s.source_index for s in states], dtype=torch.int64),
    }
    tensor_path = root / _TENSORS
    _atomic_write(
        tensor_path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    )
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "num_states": len(states),
        "mask_token_id": cset.mask_token_id,
        "states_sha256": _sha256(tensor_path),
        "provenance": cset.provenance.to_dict(),
    }
    _atomic_write(
        root / _META, lambda tmp: tmp.write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n")
    )
    return root


def _read_meta(root: Path) -> dict:
    meta_path = root / _META
    if not root.exists():
        raise FileNotFoundError(
            f"no calibration set at {root}: expected a directory holding {_META} and {_TENSORS} "
            "(written by CalibrationSet.save)"
        )
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} is missing; {root} is not a saved calibration set (or the save was interrupted)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptCalibrationSetError(
            f"{meta_path} is not valid JSON ({err}); re-save the calibration set"
        ) from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CorruptCalibrationSetError(
            f"{meta_path} is not a {FORMAT_NAME} file (format field missing or wrong)"
        )
    if meta.get("version") != FORMAT_VERSION:
        raise CorruptCalibrationSetError(
            f"{meta_path} has format version {meta.get('version')!r}; this dllm-calib reads version "
            f"{FORMAT_VERSION}"
        )
    return meta


def load_calibration_set(path: str | Path) -> CalibrationSet:
    """Read a set written by `save_calibration_set`.

    Raises:
        FileNotFoundError: the directory or one of its two files is missing.
        CorruptCalibrationSetError: unreadable JSON or safetensors, checksum mismatch, inconsistent content.
    """
    root = Path(path)
    meta = _read_meta(root)
    tensor_path = root / _TENSORS
    if not tensor_path.is_file():
        raise FileNotFoundError(
            f"{tensor_path} is missing; {root} holds {_META} but not the states it describes"
        )
    if _sha256(tensor_path) != meta.get("states_sha256"):
        raise CorruptCalibrationSetError(
            f"{tensor_path} does not match the checksum recorded in {_META}: the file is damaged or belongs "
            "to "
            "another set; re-save the calibration set"
        )
    try:
        t = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptCalibrationSetError(f"cannot read {tensor_path}: {err}") from err
    missing = [k for k in _KEYS if k not in t]
    if missing:
        raise CorruptCalibrationSetError(f"{tensor_path} lacks tensors {missing}")
    offsets = t["offsets"].tolist()
    n = int(meta.get("num_states", -1))
    if len(offsets) != n + 1 or offsets[-1] != t["input_ids"].numel():
        raise CorruptCalibrationSetError(f"{tensor_path}: offsets do not match num_states={n} in {_META}")
    try:
        states = []
        for i in range(n):
            a, b = offsets[i], offsets[i + 1]
            states.append(
                CalibrationState(
                    input_ids=t["input_ids"][a:b].clone(),
                    attention_mask=t["attention_mask"][a:b].clone(),
                    is_masked=t["is_masked"][a:b].clone(),
                    mask_ratio=float(t["mask_ratio"][i]),
                    t=float(t["t"][i]),
                    confidence=t["confidence"][a:b].clone() if bool(t["has_confidence"][i]) else None,
                    step=int(t["step"][i]),
                    source_index=int(t["source_index"][i]),
                )
            )
        return CalibrationSet(
            tuple(states), Provenance.from_dict(meta["provenance"]), meta.get("mask_token_id")
        )
    except (ValueError, TypeError, KeyError) as err:
        raise CorruptCalibrationSetError(f"{root} holds an inconsistent calibration set: {err}") from err
