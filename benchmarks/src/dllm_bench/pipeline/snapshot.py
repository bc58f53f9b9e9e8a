"""Snapshots of a model's state as data (safetensors + JSON), for the resume files of a work directory.

A snapshot of one block (or of the whole model) is two files written side by side:

* ``<stem>.safetensors``: ``state.<key>`` = the unit's ``state_dict`` with its run-time wrappers taken off
  (``dllm_actquant.strip_wrappers``), ``runtime.<key>`` = the wrappers' tensors;
* ``<stem>.json``: ``{"layers": {name: QuantLinear.layout()}, "runtime": wrapper record, "aliases":
  {key: key it shares storage with}, "config": model config (whole-model snapshots only), "rows": [...]}``.

Restoring rebuilds the unit from plain data: the quantized layers from their layouts, every tensor through
``load_state_dict(strict=True)``, the wrappers through ``dllm_actquant.restore_wrappers``. No Python object
is deserialized, so a snapshot file cannot run code; a file that does not fit the model is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from dllm_actquant import restore_wrappers, strip_wrappers, stripped_wrappers
from dllm_sampler import DiffusionLM
from dllm_sampler.atomic import atomic_file, atomic_path
from dllm_weightquant import QuantLinear, replace_linear
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

__all__ = ["SnapshotError", "restore_block", "restore_model", "save_block", "save_model"]

_STATE, _RUNTIME = "state.", "runtime."


class SnapshotError(ValueError):
    """A snapshot file is missing, unreadable or does not fit the model (names the file and the fix)."""


def _block_name(dlm: DiffusionLM, index: int) -> str:
    return f"{dlm.spec.names.blocks}.{index}"


def _collect(module: nn.Module, runtime_tensors: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict]:
    """The tensors of ``module`` (wrappers already off) and of its wrappers, plus the JSON-ready layout."""
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...], torch.dtype], str] = {}
    for key, value in module.state_dict().items():
        tensor = value.detach().cpu()
        identity = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.dtype,
        )
        if identity in seen:  # a tied weight: stored once, shared again on restore
            aliases[key] = seen[identity]
            continue
        seen[identity] = key
        tensors[_STATE + key] = tensor.contiguous()
    tensors.update({_RUNTIME + k: v.detach().cpu().contiguous() for k, v in runtime_tensors.items()})
    layers = {name: m.layout() for name, m in module.named_modules() if isinstance(m, QuantLinear)}
    return tensors, {"layers": layers, "aliases": aliases}


def _write(stem: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """``stem``.safetensors then ``stem``.json, each written atomically."""
    with atomic_path(stem.with_suffix(".safetensors")) as tmp:
        save_file(tensors, str(tmp), {"format": "pt"})
    with atomic_file(stem.with_suffix(".json")) as fh:
        fh.write(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def save_block(dlm: DiffusionLM, index: int, stem: Path, extra: dict[str, Any]) -> None:
    """Write block ``index`` of ``dlm`` (with its wrappers) to ``stem``.safetensors / .json; ``extra`` is
    added to the JSON. Each file is written atomically."""
    with stripped_wrappers(dlm, {index}) as runtime:
        tensors, meta = _collect(dlm.model.get_submodule(_block_name(dlm, index)), runtime.tensors)
    _write(stem, tensors, {**meta, "runtime": runtime.record, **extra})


def save_model(dlm: DiffusionLM, stem: Path, extra: dict[str, Any]) -> None:
    """Write the whole model of ``dlm`` (with its wrappers and its config) to ``stem``.*; see `save_block`."""
    with stripped_wrappers(dlm) as runtime:
        tensors, meta = _collect(dlm.model, runtime.tensors)
    config = {**dlm.config.to_dict(), "torch_dtype": str(dlm.dtype).removeprefix("torch.")}
    _write(stem, tensors, {**meta, "runtime": runtime.record, "config": config, **extra})


def _read(stem: Path) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Any]]:
    """(state tensors with aliases resolved, runtime tensors, JSON) of the snapshot at ``stem``."""
    files = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    try:
        tensors = load_file(str(files[0]))
        meta = json.loads(files[1].read_text(encoding="utf-8"))
    except (OSError, SafetensorError, json.JSONDecodeError) as err:
        raise SnapshotError(
            f"cannot read the resume snapshot {stem}.*: {err}; delete the work directory (or pass --restart) "
            "and start over"
        ) from err
    state = {k.removeprefix(_STATE): v for k, v in tensors.items() if k.startswith(_STATE)}
    runtime = {k.removeprefix(_RUNTIME): v for k, v in tensors.items() if k.startswith(_RUNTIME)}
    for key, target in meta.get("aliases", {}).items():
        state[key] = state[target]
    return state, runtime, meta


def _load_into(module: nn.Module, state: dict[str, Tensor], meta: dict[str, Any], stem: Path) -> None:
    """Rebuild ``module``'s quantized layers from their layouts and load every tensor (strict)."""
    try:
        for name, layout in meta["layers"].items():
            prefix = f"{name}."
            own = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            replace_linear(module, name, QuantLinear.from_layout(layout, own))
        module.load_state_dict(state, strict=True, assign=True)
    except (KeyError, AttributeError, TypeError, RuntimeError, ValueError) as err:
        raise SnapshotError(
            f"the resume snapshot {stem}.* does not fit the model ({err}); the work directory is "
            "inconsistent: delete it (or pass --restart) and start over"
        ) from err


def restore_block(dlm: DiffusionLM, index: int, stem: Path) -> dict[str, Any]:
    """Put the block saved by `save_block` back into ``dlm`` (in place); returns the snapshot's JSON."""
    state, runtime, meta = _read(stem)
    strip_wrappers(dlm, {index})
    _load_into(dlm.model.get_submodule(_block_name(dlm, index)), state, meta, stem)
    restore_wrappers(dlm, meta["runtime"], runtime)
    return meta


def restore_model(dlm: DiffusionLM, stem: Path) -> dict[str, Any]:
    """Replace ``dlm.model`` by the model saved by `save_model`, built from its config; returns the JSON."""
    state, runtime, meta = _read(stem)
    config = type(dlm.config).from_dict(meta["config"])
    with torch.device("meta"):
        fresh = DiffusionLM.from_config(config, device="meta")
    _load_into(fresh.model, state, meta, stem)
    fresh.model.eval().requires_grad_(False)
    dlm.model = fresh.model
    restore_wrappers(dlm, meta["runtime"], runtime)
    return meta
