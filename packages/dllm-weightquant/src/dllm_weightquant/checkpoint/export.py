"""Write a model with ``QuantLinear`` modules as a quantized checkpoint folder (see ``FORMAT.md``).

The folder holds ``config.json`` (the model config plus ``quantization_config``), the weights as
``model.safetensors`` (or shards plus ``model.safetensors.index.json``), the tokenizer files,
``dllmq_provenance.json``, the remote-code modeling files ``auto_map`` names (copied from the source
folder), plus whatever an ``extra`` hook writes. Every tensor that is not a quantized weight is written
unchanged. All files are staged in a sibling folder and renamed into place in one step
(``dllm_sampler.atomic_folder``), so a failure never leaves a partial checkpoint and an existing one is
replaced only by a complete one.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dllm_sampler import atomic_folder, write_weights
from dllm_sampler.models import spec_for_model
from dllm_sampler.models.llada2_moe import LLaDA2Router
from torch import Tensor, nn

from dllm_weightquant.checkpoint.provenance import QuantProvenance
from dllm_weightquant.checkpoint.qconfig import (
    ModuleFormat,
    OnlineComputation,
    compressed_tensors_config,
    dllmq_config,
)
from dllm_weightquant.checkpoint.sglang import (
    SGLANG_CONFIG_DEFAULTS,
    sglang_extra_ignore,
    sglang_problems,
    sglang_shape_notes,
)
from dllm_weightquant.checkpoint.tensors import disk_tensors
from dllm_weightquant.multibinary import MultiBinaryWeight
from dllm_weightquant.qlinear import QuantLinear
from dllm_weightquant.qweight import QuantizedWeight

if TYPE_CHECKING:
    from dllm_sampler import DiffusionLM

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_MAX_SHARD_BYTES",
    "INDEX_FILE",
    "SINGLE_FILE",
    "export_quantized",
    "remote_code_files",
]

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9


def _module_format(module: QuantLinear, layout: str) -> ModuleFormat:
    qw = module.qweight
    if isinstance(qw, MultiBinaryWeight):
        return ModuleFormat("multi-binary", group_size=qw.group_size)
    return ModuleFormat("uniform", spec=qw.spec, g_idx=qw.g_idx is not None, layout=layout)


def _quantized_modules(model: nn.Module) -> dict[str, QuantLinear]:
    quantized = {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    if not quantized:
        raise ValueError(
            "the model has no QuantLinear modules; quantize it (and replace_linear) before exporting"
        )
    gguf = [name for name, m in quantized.items() if m.layout()["kind"] == "gguf"]
    if gguf:
        raise ValueError(
            f"{gguf[0]} (and {len(gguf) - 1} more) holds GGUF blocks, which a dllmq checkpoint folder does "
            "not store: write the model as a GGUF file (dllmq quantize --format gguf, or "
            "dllm_weightquant.gguf.write_gguf)"
        )
    return quantized


def quantized_state(
    model: nn.Module, int_quantized: frozenset[str] = frozenset()
) -> tuple[dict[str, Tensor], dict[str, ModuleFormat], list[str]]:
    """(tensors to write, quantized module -> format, names of the modules whose weights stay in float).

    Uniform weights use the ``pack-quantized`` layout, those named in ``int_quantized`` the
    ``int-quantized`` one (see ``tensors.py``). The float modules are the unquantized Linears and the MoE
    routers (LLaDA2's ``mlp.gate``, whose ``expert_bias`` is written in float32 whatever the model's dtype).
    """
    quantized = _quantized_modules(model)
    layouts = {name: "int-quantized" if name in int_quantized else "pack-quantized" for name in quantized}
    routers = {name: m for name, m in model.named_modules() if isinstance(m, LLaDA2Router)}
    ignore = sorted([name for name, m in model.named_modules() if isinstance(m, nn.Linear)] + list(routers))
    state: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if owner in quantized and leaf != "bias":
            continue
        state[key] = value.float() if owner in routers and leaf == "expert_bias" else value
    for name, module in quantized.items():
        for leaf, value in disk_tensors(module.qweight, layouts[name]).items():
            state[f"{name}.{leaf}"] = value
    return state, {name: _module_format(m, layouts[name]) for name, m in quantized.items()}, ignore


_RELATIVE_IMPORT = re.compile(r"^\s*(?:from\s+\.(\w+)\s+import|import\s+\.(\w+))", re.MULTILINE)


def _auto_map_modules(config: dict[str, Any]) -> list[str]:
    """The local module names ``config["auto_map"]`` points at (``"modeling_llada.LLaDAModelLM"`` ->
    ``modeling_llada``); references into another repository (``"org/repo--module.Class"``) are skipped."""
    refs: list[str] = []
    for value in (config.get("auto_map") or {}).values():
        refs.extend(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str))
    return sorted({ref.rpartition(".")[0] for ref in refs if "--" not in ref and "." in ref})


def remote_code_files(config: dict[str, Any], source: Path) -> tuple[list[Path], list[str]]:
    """The ``.py`` files of ``source`` that transformers' remote-code loading of ``config`` needs: the
    modules ``auto_map`` names and, recursively, the local modules they import relatively. Returns
    (files found, module names missing from ``source``)."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    todo = _auto_map_modules(config)
    while todo:
        module = todo.pop()
        if module in found or module in missing:
            continue
        file = source / f"{module}.py"
        if not file.is_file():
            missing.append(module)
            continue
        found[module] = file
        for match in _RELATIVE_IMPORT.finditer(file.read_text(encoding="utf-8")):
            todo.append(match.group(1) or match.group(2))
    return sorted(found.values()), sorted(missing)


def _copy_remote_code(config: dict[str, Any], source: Path, folder: Path) -> None:
    files, missing = remote_code_files(config, source)
    for file in files:
        shutil.copyfile(file, folder / file.name)
    if missing:
        warnings.warn(
            f"config.json's auto_map names {[m + '.py' for m in missing]}, which {source} does not hold: "
            "transformers' trust_remote_code loading of the export needs them copied in by hand",
            stacklevel=3,
        )


def _check_sglang(
    model: nn.Module,
    formats: dict[str, ModuleFormat],
    online: OnlineComputation,
    compressed: bool,
    strict: bool,
) -> None:
    if not compressed:
        warnings.warn(
            "this LLaDA2 export is a dllmq-format checkpoint (multi-binary weights or online computation "
            "compressed-tensors cannot express), which SGLang cannot load; quantize with a uniform grid and "
            "weight-only to serve it with SGLang",
            stacklevel=3,
        )
        return
    problems = sglang_problems(model, formats, online)
    if problems:
        message = (
            "SGLang's LLaDA2 loader could not serve this compressed-tensors checkpoint:\n- "
            + "\n- ".join(problems)
        )
        if strict:
            raise ValueError(
                message + "\n(export_quantized(..., check_serving=False or 'warn') writes it anyway; "
                "dllmq's loader reads it)"
            )
        warnings.warn(message + "\n(dllmq's own loader reads it)", stacklevel=3)
    notes = sglang_shape_notes(model, formats)
    if notes:
        warnings.warn(
            f"{len(notes)} quantized layers miss the shapes SGLang's Marlin kernels are built for (at tensor "
            "parallel size 1; SGLang may refuse them or use a slower kernel): " + "; ".join(notes[:4]),
            stacklevel=3,
        )


def export_quantized(
    dlm: DiffusionLM,
    path: str | Path,
    provenance: QuantProvenance | None = None,
    *,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    use_compressed_tensors: bool | None = None,
    extra: Callable[[Path], None] | None = None,
    online: OnlineComputation | None = None,
    source_folder: str | Path | None = None,
    check_serving: bool | Literal["warn"] = True,
) -> Path:
    """Write ``dlm`` (a model whose quantized Linears are ``QuantLinear``) to ``path``; returns the folder.

    Format: compressed-tensors ``pack-quantized`` when every quantized Linear is uniform and ``online``
    (what runs at inference besides the weights: input activation quantizers, online Hadamards) holds
    nothing compressed-tensors cannot express; else ``dllmq`` (FORMAT.md), which other tools refuse to
    load. ``use_compressed_tensors`` picks how the compressed-tensors block is built (see
    ``compressed_tensors_config``: True = the library's classes, False = by hand, None = the library if
    installed). ``source_folder``: the float model's folder; the modeling files its config's ``auto_map``
    names are copied from it (a warning names those it lacks). ``extra(folder)`` is called last with the
    staging folder, to write more files that must be part of the checkpoint (they go into place with it,
    or not at all). An existing non-empty ``path`` is replaced only with ``overwrite=True`` and only when
    it is a checkpoint folder (has config.json).

    LLaDA2 (``LLaDA2MoeModelLM``) checkpoints are written for SGLang's loader (``sglang.py``): the routers
    and SGLang's fused names of float gate/up pairs join ``ignore`` and config keys SGLang needs are filled
    in (``SGLANG_CONFIG_DEFAULTS``). With ``check_serving`` (default), a compressed-tensors export SGLang
    could not serve raises ``ValueError`` listing each rule it breaks and the fix, widths SGLang's Marlin
    kernels are not built for warn, and a ``dllmq``-format export warns that SGLang cannot load it;
    ``check_serving="warn"`` turns the refusal into a warning (``dllmq quantize`` exports so: a W8A8KV16
    or g16 model is still a dllmq checkpoint) and ``False`` checks nothing.
    """
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    path = Path(path).expanduser()
    online = online or OnlineComputation()
    uniform = all(isinstance(m.qweight, QuantizedWeight) for m in _quantized_modules(dlm.model).values())
    as_compressed_tensors = uniform and not online.inexpressible
    int_quantized = frozenset(online.input_activations) if as_compressed_tensors else frozenset()
    state, formats, ignore = quantized_state(dlm.model, int_quantized)
    llada2 = spec_for_model(dlm.model).name == "llada2"
    if llada2:
        ignore = sorted(ignore + sglang_extra_ignore([*ignore, *formats], formats))
        if check_serving:
            _check_sglang(dlm.model, formats, online, as_compressed_tensors, strict=check_serving is True)
    if as_compressed_tensors:
        qconfig = compressed_tensors_config(
            formats, ignore, use_library=use_compressed_tensors, online=online
        )
    else:
        qconfig = dllmq_config(formats, ignore, online)
    config = dlm.config.to_dict()
    if llada2:
        config = {**SGLANG_CONFIG_DEFAULTS, **config}
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
        if source_folder is not None:
            _copy_remote_code(config, Path(source_folder).expanduser(), tmp)
        if extra is not None:
            extra(tmp)
    return path
