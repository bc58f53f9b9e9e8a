"""Write a quantized model as a checkpoint folder, and restore the run-time wrappers when loading it.

The weights go through ``dllm_weightquant.export_quantized``. The run-time wrappers around the block
linears (online rotations, dynamic activation quantizers, V quantizers, q/k site wrappers;
``dllm_actquant.stripped_wrappers``) are declared in ``config.json`` (`online_computation`): as
compressed-tensors ``input_activations`` and ``transform_config`` when its schema expresses all of them
(the checkpoint is then ``pack-quantized`` and other tools run the same model), else the checkpoint is
written in the ``dllmq`` format, which other tools refuse to load, with the reasons in its config. They
are also written beside the weights, so that `restore_runtime` rebuilds exactly the same model:

* ``dllmq_runtime.json``: the wrappers' record (``dllm_actquant.runtime``), and ``dllmq_runtime.tensors``
  (safetensors content, only when the record names tensors, e.g. rotations) under a name that no
  tool takes for a weight shard; exports before it wrote ``dllmq_runtime.safetensors``, still read;
* ``quant_log.csv`` (the per-module log), ``dllmq_recipe.yaml`` (the recipe that ran) and
  ``dllmq_sites.json`` (what is quantized: weights, linear inputs, Q/K/V; `quantized_sites`);
* the modeling files the config's ``auto_map`` names, copied from the source model's folder.

Without its runtime files the folder would load as a different model, so they are written into the
export's staging folder (``export_quantized``'s ``extra`` hook) and go into place with the weights in one
rename, or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path

from dllm_actquant import restore_wrappers, stripped_wrappers
from dllm_sampler import DiffusionLM, check_finite
from dllm_sampler.registry import resolve
from dllm_weightquant import QuantProvenance, export_quantized
from safetensors.torch import load_file, save_file
from torch import Tensor

from dllm_bench.pipeline.log import write_log
from dllm_bench.pipeline.online import online_computation
from dllm_bench.pipeline.runner import LOG_FILE, QuantizeResult
from dllm_bench.pipeline.sites import SITES_FILE, quantized_sites

__all__ = [
    "LEGACY_RUNTIME_TENSORS",
    "RECIPE_FILE",
    "RUNTIME_FILE",
    "RUNTIME_TENSORS",
    "export_model",
    "restore_runtime",
]

RUNTIME_FILE = "dllmq_runtime.json"
RUNTIME_TENSORS = "dllmq_runtime.tensors"
LEGACY_RUNTIME_TENSORS = "dllmq_runtime.safetensors"
RECIPE_FILE = "dllmq_recipe.yaml"


def _source_folder(source_model: str) -> Path | None:
    """The folder of the float model (a folder or a shipped name), None when it is neither."""
    if not source_model:
        return None
    try:
        return resolve(source_model)
    except (FileNotFoundError, NotADirectoryError):
        return None


def export_model(
    result: QuantizeResult, path: str | Path, *, overwrite: bool = False, source_model: str = ""
) -> Path:
    """Write ``result``'s model to the folder ``path`` (see the module docstring); returns the folder.

    ``source_model`` (the shipped name or folder of the float model) is recorded in the provenance, where
    ``dllmq analyze steps`` finds its default reference, and the modeling files its config's ``auto_map``
    names are copied from its folder. Every file is staged and moved into place in one
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
            """Into the staging folder: the runtime record and its tensors (when there are wrappers; the
            tensors when there are any), the log, the recipe and the sites."""
            if runtime:
                text = json.dumps(runtime.record, indent=2) + "\n"
                (folder / RUNTIME_FILE).write_text(text, encoding="utf-8")
                if runtime.tensors:
                    save_file(runtime.tensors, str(folder / RUNTIME_TENSORS), {"format": "pt"})
            write_log(result.rows, folder / LOG_FILE)
            (folder / RECIPE_FILE).write_text(recipe.to_yaml(), encoding="utf-8")
            (folder / SITES_FILE).write_text(json.dumps(sites, indent=2) + "\n", encoding="utf-8")

        return export_quantized(
            result.dlm,
            path,
            provenance,
            overwrite=overwrite,
            extra=write_bench_files,
            online=online_computation(result.dlm, runtime),
            source_folder=_source_folder(source_model),
            check_serving="warn",  # a dllmq checkpoint first; what SGLang could not serve is a warning
        )


def _runtime_tensors(folder: Path) -> dict[str, Tensor]:
    """The runtime tensors of ``folder`` (new or legacy file name; none when neither exists), each checked
    finite."""
    for name in (RUNTIME_TENSORS, LEGACY_RUNTIME_TENSORS):
        file = folder / name
        if file.is_file():
            tensors = load_file(str(file))
            for key, tensor in tensors.items():
                check_finite(tensor, key, file)
            return tensors
    return {}


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
    tensors = _runtime_tensors(folder)
    try:
        return restore_wrappers(dlm, record, tensors)
    except KeyError as err:
        raise ValueError(f"{file} names the runtime tensor {err} that {folder} does not hold") from err
    except ValueError as err:
        raise ValueError(f"{file}: {err}") from err
