"""The sequential layer-wise quantization pipeline: `quantize_model` runs a recipe block by block.

* `quantize_model(dlm, recipe, device=..., work_dir=...)` -> `QuantizeResult` (resumable with a work dir);
* `export_model(result, folder)` writes the checkpoint (plus the run-time wrappers it needs),
  `restore_runtime(dlm, folder)` re-creates those wrappers after ``dllm_weightquant.load_quantized``;
* `prepare_calibration` turns a recipe's calibration spec into a ``dllm_calib.CalibrationSet``;
* resume: `WorkDir` (safetensors + JSON checkpoints, refused unless the run matches), `FolderLock`
  (one run per work folder), `SnapshotError` (an unreadable or inconsistent checkpoint);
* `BlockRunner` runs one block of a model with the model's own forward; `ModelContext` / `BlockContext`
  are the ``dllm_calib.MethodContext`` s the registered methods run in; `LogRow` / `write_log` the CSV
  log.
"""

from dllm_bench.pipeline.blocks import BlockRunner
from dllm_bench.pipeline.calibration import load_calibration_list, prepare_calibration
from dllm_bench.pipeline.context import BlockContext, ModelContext
from dllm_bench.pipeline.coverage import LayerCoverage, expert_coverage, format_coverage
from dllm_bench.pipeline.export import RECIPE_FILE, RUNTIME_FILE, export_model, restore_runtime
from dllm_bench.pipeline.lock import LOCK_FILE, FolderBusyError, FolderLock
from dllm_bench.pipeline.log import LOG_COLUMNS, LogRow, write_log
from dllm_bench.pipeline.runner import LOG_FILE, QuantizeResult, quantize_model
from dllm_bench.pipeline.sites import SITES_FILE, format_sites, quantized_sites
from dllm_bench.pipeline.snapshot import SnapshotError
from dllm_bench.pipeline.targets import ignored_linears
from dllm_bench.pipeline.workdir import WorkDir

__all__ = [
    "LOCK_FILE",
    "LOG_COLUMNS",
    "LOG_FILE",
    "RECIPE_FILE",
    "RUNTIME_FILE",
    "SITES_FILE",
    "BlockContext",
    "BlockRunner",
    "FolderBusyError",
    "FolderLock",
    "LayerCoverage",
    "LogRow",
    "ModelContext",
    "QuantizeResult",
    "SnapshotError",
    "WorkDir",
    "expert_coverage",
    "export_model",
    "format_coverage",
    "format_sites",
    "ignored_linears",
    "load_calibration_list",
    "prepare_calibration",
    "quantize_model",
    "quantized_sites",
    "restore_runtime",
    "write_log",
]
