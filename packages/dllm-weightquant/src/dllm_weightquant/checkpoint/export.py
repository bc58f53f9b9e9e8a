"""Write a model with ``QuantLinear`` modules as a quantized checkpoint folder (see ``FORMAT.md``).

The folder holds ``config.json`` (the model config plus ``quantization_config``), the weights as
``model.safetensors`` (or shards plus ``model.safetensors.index.json``), the tokenizer files and
``dllmq_provenance.json``, plus whatever an ``extra`` hook writes. Every tensor that is not a quantized
weight is written unchanged. All files are staged in a sibling folder and renamed into place in one step
(``dllm_sampler.atomic_folder``), so a failure never leaves a partial checkpoint and an existing one is
replaced only by a complete one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dllm_sampler import atomic_folder, write_weights
from torch import Tensor, nn

from dllm_weightquant.checkpoint.provenance import QuantProvenance
from dllm_weightquant.checkpoint.qconfig import ModuleFormat, compressed_tensors_config, dllmq_config
from dllm_weightquant.checkpoint.tensors import disk_tensors
from dllm_weightquant.multibinary import MultiBinaryWeight
from dllm_weightquant.qlinear import QuantLinear

if TYPE_CHECKING:
    from dllm_sampler import DiffusionLM

__all__ = ["CONFIG_FILE", "DEFAULT_MAX_SHARD_BYTES", "INDEX_FILE", "SINGLE_FILE", "export_quantized"]

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9


def _module_format(module: QuantLinear) -> ModuleFormat:
    qw = module.qweight
    if isinstance(qw, MultiBinaryWeight):
        return ModuleFormat("multi-binary", group_size=qw.group_size)
    return ModuleFormat("uniform", spec=qw.spec, g_idx=qw.g_idx is not None)


def quantized_state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, ModuleFormat], list[str]]:
    """(tensors to write, quantized module -> format, names of the Linears left unquantized)."""
    quantized = {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    if not quantized:
        raise ValueError(
            "the model has no QuantLinear modules; quantize it (and replace_linear) before exporting"
        )
    ignore = sorted(name for name, m in model.named_modules() if isinstance(m, nn.Linear))
    state: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if owner in quantized and leaf != "bias":
            continue
        state[key] = value
    for name, module in quantized.items():
        for leaf, value in disk_tensors(module.qweight).items():
            state[f"{name}.{leaf}"] = value
    return state, {name: _module_format(m) for name, m in quantized.items()}, ignore


def export_quantized(
    dlm: DiffusionLM,
    path: str | Path,
    provenance: QuantProvenance | None = None,
    *,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    use_compressed_tensors: bool | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``dlm`` (a model whose quantized Linears are ``QuantLinear``) to ``path``; returns the folder.

    Format: compressed-tensors ``pack-quantized`` when every quantized Linear is uniform, else ``dllmq``
    (FORMAT.md). ``use_compressed_tensors`` picks how the compressed-tensors block is built (see
    ``compressed_tensors_config``: True = the library's classes, False = by hand, None = the library if
    installed). ``extra(folder)`` is called last with the staging folder, to write more files that must
    be part of the checkpoint (they go into place with it, or not at all). An existing non-empty ``path``
    is replaced only with ``overwrite=True`` and only when it is a checkpoint folder (has config.json).
    """
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    path = Path(path).expanduser()
    state, formats, ignore = quantized_state(dlm.model)
    if all(f.kind == "uniform" for f in formats.values()):
        qconfig = compressed_tensors_config(formats, ignore, use_library=use_compressed_tensors)
    else:
        qconfig = dllmq_config(formats, ignore)
    config = dlm.config.to_dict()
    config["torch_dtype"] = str(dlm.dtype).removeprefix("torch.")
    config["quantization_config"] = qconfig

    with atomic_folder(path, overwrite) as tmp:
        write_weights(state, tmp, max_shard_bytes)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if dlm.tokenizer is not None:
            dlm.tokenizer.save(str(tmp / TOKENIZER_FILE))
        for name, content in dlm.tokenizer_files.items():
            (tmp / name).write_text(
                json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
        (provenance or QuantProvenance()).write(tmp)
        if extra is not None:
            extra(tmp)
    return path
