"""Write a quantized model as a checkpoint folder, and restore the run-time wrappers when loading it.

The weights go through ``dllm_weightquant.export_quantized`` (compressed-tensors ``pack-quantized`` for
uniform grids, the ``dllmq`` format for DAQ/ABMP planes). What that format cannot express, the run-time
wrappers around the block linears (online rotations, dynamic activation quantizers, V quantizers;
``dllm_actquant.stripped_wrappers``), is written beside it, so that `restore_runtime` rebuilds the same
model:

* ``dllmq_runtime.json`` + ``dllmq_runtime.safetensors``: the wrappers' record and tensors
  (``dllm_actquant.runtime``);
* ``quant_log.csv`` (the per-module log), ``dllmq_recipe.yaml`` (the recipe that ran) and
  ``dllmq_sites.json`` (what is quantized: weights, linear inputs, Q/K/V; `quantized_sites`).

Without its runtime files the folder would load as a different model, so they are written into the
export's staging folder (``export_quantized``'s ``extra`` hook) and go into place with the weights in one
rename, or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path

from dllm_actquant import restore_wrappers, stripped_wrappers
from dllm_sampler import DiffusionLM, check_finite
from dllm_weightquant import QuantProvenance, export_quantized
from safetensors.torch import load_file, save_file

from dllm_bench.pipeline.log import write_log
from dllm_bench.pipeline.runner import LOG_FILE, QuantizeResult
from dllm_bench.pipeline.sites import SITES_FILE, quantized_sites

__all__ = ["RECIPE_FILE", "RUNTIME_FILE", "RUNTIME_TENSORS", "export_model", "restore_runtime"]

RUNTIME_FILE = "dllmq_runtime.json"
RUNTIME_TENSORS = "dllmq_runtime.safetensors"
RECIPE_FILE = "dllmq_recipe.yaml"


def export_model(
    result: QuantizeResult, path: str | Path, *, overwrite: bool = False, source_model: str = ""
) -> Path:
    """Write ``result``'s model to the folder ``path`` (see the module docstring); returns the folder.

    ``source_model`` (the shipped name or folder of the float model) is recorded in the provenance, where
    ``dllmq analyze steps`` finds its default reference. Every file is staged and moved into place in one
    rename; ``overwrite`` replaces only a checkpoint folder (see ``dllm_sampler.atomic_folder``).
    """
    recipe = result.recipe
    provenance = QuantProvenance(
        model=source_model,
        recipe=[s.to_dict() for s in recipe.steps],
        seeds={"recipe": recipe.seed},
        calibration=result.calibration or {},
        notes=f"dllmq recipe {recipe.name!r} at {recipe.scheme.label}",
    )
    sites = quantized_sites(result.dlm)

    with stripped_wrappers(result.dlm) as runtime:

        def write_bench_files(folder: Path) -> None:
            """Into the staging folder: the runtime record and tensors (when there are wrappers), the log,
            the recipe and the sites."""
            if runtime:
                text = json.dumps(runtime.record, indent=2) + "\n"
                (folder / RUNTIME_FILE).write_text(text, encoding="utf-8")
                save_file(runtime.tensors, str(folder / RUNTIME_TENSORS), {"format": "pt"})
            write_log(result.rows, folder / LOG_FILE)
            (folder / RECIPE_FILE).write_text(recipe.to_yaml(), encoding="utf-8")
            (folder / SITES_FILE).write_text(json.dumps(sites, indent=2) + "\n", encoding="utf-8")

        return export_quantized(result.dlm, path, provenance, overwrite=overwrite, extra=write_bench_files)


def restore_runtime(dlm: DiffusionLM, folder: str | Path) -> DiffusionLM:
    """Re-create the wrappers and V quantizers recorded by `export_model` on a loaded checkpoint (in place).

    A folder without ``dllmq_runtime.json`` is returned unchanged. Raises ``dllm_sampler.CheckpointError``
    naming a runtime tensor (e.g. a rotation) with NaN or Inf values.
    """
    folder = Path(folder)
    file = folder / RUNTIME_FILE
    if not file.is_file():
        return dlm
    record = json.loads(file.read_text(encoding="utf-8"))
    tensors = load_file(str(folder / RUNTIME_TENSORS))
    for name, tensor in tensors.items():
        check_finite(tensor, name, folder / RUNTIME_TENSORS)
    try:
        return restore_wrappers(dlm, record, tensors)
    except ValueError as err:
        raise ValueError(f"{file}: {err}") from err
