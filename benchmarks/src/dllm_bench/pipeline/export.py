"""Write a quantized model as a checkpoint folder, and restore the run-time wrappers when loading it.

The weights go through ``dllm_weightquant.export_quantized`` (compressed-tensors ``pack-quantized`` for
uniform grids, the ``dllmq`` format for DAQ/ABMP planes). What that format cannot express is written
beside it, so that `restore_runtime` rebuilds the same model:

* ``dllmq_runtime.json`` + ``dllmq_runtime.safetensors``: per block linear, the online input rotation
  (QuaRot's Hadamard R4, DuQuant's block rotations; the weight already absorbed it) and the dynamic
  per-token activation quantizer; per block, IA-AQ's V quantizer parameters;
* ``quant_log.csv`` (the per-module log) and ``dllmq_recipe.yaml`` (the recipe that ran).

Loading order mirrors the pipeline: ``QuantLinear`` -> activation quantizer -> online rotation; V
quantizers as forward hooks on the v projections.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dllm_actquant import (
    ActQuantConfig,
    ActQuantLinear,
    BlockRotation,
    HadamardRotation,
    InputRotation,
    OnlineRotation,
    VQuantConfig,
    VQuantParams,
    attach_v_quantizers,
)
from dllm_actquant.modules import replace_module
from dllm_sampler import DiffusionLM
from dllm_weightquant import QuantProvenance, export_quantized
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from dllm_bench.pipeline.log import write_log
from dllm_bench.pipeline.runner import LOG_FILE, QuantizeResult

__all__ = ["RECIPE_FILE", "RUNTIME_FILE", "RUNTIME_TENSORS", "export_model", "restore_runtime"]

RUNTIME_FILE = "dllmq_runtime.json"
RUNTIME_TENSORS = "dllmq_runtime.safetensors"
RECIPE_FILE = "dllmq_recipe.yaml"
_FORMAT = 1


class _Rotations:
    """Records online rotations once each (DuQuant shares one rotation among q, k and v)."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self.tensors = tensors
        self.seen: dict[int, dict[str, Any]] = {}

    def describe(self, name: str, rotation: InputRotation) -> dict[str, Any]:
        if id(rotation) in self.seen:
            return self.seen[id(rotation)]
        if isinstance(rotation, HadamardRotation):
            record: dict[str, Any] = {"kind": "hadamard", "size": rotation.size}
        elif isinstance(rotation, BlockRotation):
            keys = [f"{name}.rotation.step{i}" for i in range(len(rotation.steps()))]
            for key, step in zip(keys, rotation.steps(), strict=True):
                self.tensors[key] = step.detach().cpu().contiguous()
            record = {"kind": "block", "steps": keys}
        else:
            raise ValueError(f"{name}: cannot export an online rotation of type {type(rotation).__name__}")
        self.seen[id(rotation)] = record
        return record


def _unwrap(name: str, module: nn.Module, rotations: _Rotations) -> tuple[nn.Module, dict[str, Any]]:
    """The innermost layer at ``name`` and a description of the wrappers around it."""
    entry: dict[str, Any] = {}
    if isinstance(module, OnlineRotation):
        entry["rotation"] = rotations.describe(name, module.rotation)
        module = module.inner
    if isinstance(module, ActQuantLinear):
        if module.mode != "fake" or not module.config.dynamic:
            raise ValueError(f"{name}: only fake-mode dynamic activation quantizers can be exported")
        entry["activations"] = module.config.to_dict()
        module = module.inner
    return module, entry


@contextmanager
def _plain_linears(dlm: DiffusionLM, tensors: dict[str, Tensor]) -> Iterator[dict[str, Any]]:
    """Inside the ``with`` body every block linear name holds its innermost layer; yields the wrapper
    records (name -> rotation / activation quantizer description)."""
    root = dlm.model
    rotations = _Rotations(tensors)
    wrapped: dict[str, nn.Module] = {}
    records: dict[str, Any] = {}
    try:
        for name in dlm.topology.linear_names():
            outer = root.get_submodule(name)
            inner, entry = _unwrap(name, outer, rotations)
            if entry:
                wrapped[name], records[name] = outer, entry
                replace_module(root, name, inner)
        yield records
    finally:
        for name, outer in wrapped.items():
            replace_module(root, name, outer)


def _vquant_record(result: QuantizeResult, tensors: dict[str, Tensor]) -> dict[str, Any] | None:
    if result.vquant_config is None or not result.vquant:
        return None
    blocks: dict[str, dict[str, str]] = {}
    for index, params in sorted(result.vquant.items()):
        keys = {}
        for part in ("alpha", "lo", "hi"):
            value = getattr(params, part)
            if value is not None:
                keys[part] = f"vquant.{index}.{part}"
                tensors[keys[part]] = value.detach().cpu().contiguous()
        blocks[str(index)] = keys
    return {"config": result.vquant_config.to_dict(), "blocks": blocks}


def export_model(
    result: QuantizeResult, path: str | Path, *, overwrite: bool = False, source_model: str = ""
) -> Path:
    """Write ``result``'s model to the folder ``path`` (see the module docstring); returns the folder.

    ``source_model`` (the shipped name or folder of the float model) is recorded in the provenance, where
    ``dllmq analyze steps`` finds its default reference.
    """
    recipe = result.recipe
    provenance = QuantProvenance(
        model=source_model,
        recipe=[s.to_dict() for s in recipe.steps],
        seeds={"recipe": recipe.seed},
        calibration=result.calibration or {},
        notes=f"dllmq recipe {recipe.name!r} at {recipe.scheme.label}",
    )
    tensors: dict[str, Tensor] = {}
    with _plain_linears(result.dlm, tensors) as linears:
        folder = export_quantized(result.dlm, path, provenance, overwrite=overwrite)
    try:  # without its runtime files the folder would load as a different model: all or nothing
        vquant = _vquant_record(result, tensors)
        if linears or vquant:
            runtime = {"format": _FORMAT, "linears": linears, "vquant": vquant}
            (folder / RUNTIME_FILE).write_text(json.dumps(runtime, indent=2) + "\n", encoding="utf-8")
            save_file(tensors, str(folder / RUNTIME_TENSORS), {"format": "pt"})
        write_log(result.rows, folder / LOG_FILE)
        (folder / RECIPE_FILE).write_text(recipe.to_yaml(), encoding="utf-8")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _rotation(record: dict[str, Any], tensors: dict[str, Tensor]) -> InputRotation:
    if record["kind"] == "hadamard":
        return HadamardRotation(int(record["size"]))
    return BlockRotation([tensors[key] for key in record["steps"]])


def restore_runtime(dlm: DiffusionLM, folder: str | Path) -> DiffusionLM:
    """Re-create the wrappers and V quantizers recorded by `export_model` on a loaded checkpoint (in place).

    A folder without ``dllmq_runtime.json`` is returned unchanged.
    """
    folder = Path(folder)
    file = folder / RUNTIME_FILE
    if not file.is_file():
        return dlm
    runtime = json.loads(file.read_text(encoding="utf-8"))
    if runtime.get("format") != _FORMAT:
        raise ValueError(f"{file}: unsupported runtime format {runtime.get('format')!r} (expected {_FORMAT})")
    tensors = load_file(str(folder / RUNTIME_TENSORS))
    root = dlm.model
    shared: dict[str, InputRotation] = {}
    for name, entry in runtime["linears"].items():
        module = root.get_submodule(name)
        if "activations" in entry:
            module = ActQuantLinear(module, ActQuantConfig(**entry["activations"]), mode="fake")
        if "rotation" in entry:
            key = json.dumps(entry["rotation"], sort_keys=True)
            if key not in shared:
                shared[key] = _rotation(entry["rotation"], tensors).to(dlm.device)
            module = OnlineRotation(module, shared[key])
        replace_module(root, name, module)
    vquant = runtime.get("vquant")
    if vquant:
        config = VQuantConfig(**vquant["config"])
        params = {
            int(index): VQuantParams(**{part: tensors[key].to(dlm.device) for part, key in keys.items()})
            for index, keys in vquant["blocks"].items()
        }
        attach_v_quantizers(dlm, config, params)
    return dlm
