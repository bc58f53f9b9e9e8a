"""`load_any`: a plain checkpoint (``dllm_sampler.load``) or a quantized one (``dllm_weightquant``);
`default_reference`: the float model a quantized folder was made from."""

from __future__ import annotations

import json
from pathlib import Path

import dllm_sampler
import torch
from dllm_sampler import CheckpointError, DiffusionLM, available_models
from dllm_weightquant import load_quantized, read_provenance
from safetensors import SafetensorError, safe_open

from dllm_bench.pipeline import RUNTIME_FILE, restore_runtime

__all__ = ["default_reference", "is_gguf_file", "is_quantized_folder", "load_any"]


def is_gguf_file(path: str | Path) -> bool:
    """True when ``path`` is a file named ``*.gguf``."""
    path = Path(path).expanduser()
    return path.suffix.lower() == ".gguf" and path.is_file()


def is_quantized_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder whose config.json carries a ``quantization_config``.

    Raises:
        CheckpointError: config.json is not a JSON object (a truncated or damaged checkpoint).
    """
    config = Path(path).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config}: not valid JSON ({err}); the checkpoint is damaged") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{config}: expected a JSON object, got {type(data).__name__}")
    return "quantization_config" in data


def load_any(
    path_or_name: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> DiffusionLM:
    """A shipped model name, a plain checkpoint folder or a quantized checkpoint folder as a `DiffusionLM`.

    Quantized folders load with ``dllm_weightquant.load_quantized`` (packed weights on the low-bit kernels)
    and get back the online rotations, activation quantizers and V quantizers `dllm_bench` recorded;
    ``dtype`` then casts the unquantized tensors only. A ``.gguf`` file written by dllmq's GGUF export is
    read back dequantized (``dllm_weightquant.gguf.read_gguf``).
    """
    if is_gguf_file(path_or_name):
        from dllm_weightquant.gguf import read_gguf

        return read_gguf(path_or_name, dtype=dtype, device=device)
    if not is_quantized_folder(path_or_name):
        return dllm_sampler.load(path_or_name, dtype=dtype, device=device)
    folder = Path(path_or_name).expanduser()
    with_online = (folder / RUNTIME_FILE).is_file()  # restore_runtime rebuilds what the config declares
    try:
        dlm = restore_runtime(load_quantized(folder, device=device, with_online=with_online), folder)
    except SafetensorError as err:
        raise CheckpointError(_unreadable(folder, err)) from err
    return dlm if dtype is None else dlm.to(dtype)


def _unreadable(folder: Path, err: SafetensorError) -> str:
    """What to say when a quantized folder's safetensors do not read: the first file whose header fails
    (truncated, corrupt), or the folder with safetensors' own message."""
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except SafetensorError as bad:
            return (
                f"{file}: corrupt or unreadable safetensors file ({bad}); the checkpoint is truncated or "
                "damaged, re-export it"
            )
    return f"{folder}: a safetensors file does not read ({err}); the checkpoint is damaged, re-export it"


def _provenance_model(folder: str) -> str:
    """The float model a quantized folder's provenance records (``model``, written by ``dllmq quantize``),
    "" when there is none."""
    try:
        model = read_provenance(folder).get("model")
    except FileNotFoundError:
        return ""
    return model if isinstance(model, str) else ""


def _loadable_float_model(name: str) -> bool:
    return name in available_models() or (Path(name).is_dir() and not is_quantized_folder(name))


def default_reference(model: str) -> str:
    """The float model a quantized folder's provenance names, when it is a shipped name or a folder.

    Raises:
        ValueError: if ``model`` is not a quantized folder or its provenance names no loadable float model.
    """
    if is_gguf_file(model):
        from dllm_weightquant.gguf import gguf_source_model

        named = gguf_source_model(model)
        if named and _loadable_float_model(named):
            return named
        raise ValueError(f"--reference is required: {model} records no loadable float model ({named!r})")
    if not is_quantized_folder(model):
        raise ValueError(
            f"--reference is required: {model} is not a quantized folder, so there is no float model to "
            "compare it with by default"
        )
    named = _provenance_model(model)
    if named and _loadable_float_model(named):
        return named
    found = f" (it records {named!r}, which does not load)" if named else ""
    raise ValueError(
        f"--reference is required: the provenance of {model} names no loadable float model{found}; pass "
        "--reference with the shipped name or checkpoint folder the model was quantized from"
    )
