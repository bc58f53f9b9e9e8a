"""`load_any`: a plain checkpoint (``dllm_sampler.load``) or a quantized one (``dllm_weightquant``);
`default_reference`: the float model a quantized folder was made from."""

from __future__ import annotations

import json
from pathlib import Path

import dllm_sampler
import torch
from dllm_sampler import DiffusionLM, available_models
from dllm_weightquant import load_quantized, read_provenance

from dllm_bench.pipeline import RUNTIME_FILE, restore_runtime

__all__ = ["default_reference", "is_quantized_folder", "load_any"]


def is_quantized_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder whose config.json carries a ``quantization_config``."""
    config = Path(path).expanduser() / "config.json"
    if not config.is_file():
        return False
    return "quantization_config" in json.loads(config.read_text(encoding="utf-8"))


def load_any(
    path_or_name: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> DiffusionLM:
    """A shipped model name, a plain checkpoint folder or a quantized checkpoint folder as a `DiffusionLM`.

    Quantized folders load with ``dllm_weightquant.load_quantized`` (packed weights on the low-bit kernels)
    and get back the online rotations, activation quantizers and V quantizers `dllm_bench` recorded;
    ``dtype`` then casts the unquantized tensors only.
    """
    if not is_quantized_folder(path_or_name):
        return dllm_sampler.load(path_or_name, dtype=dtype, device=device)
    folder = Path(path_or_name).expanduser()
    with_online = (folder / RUNTIME_FILE).is_file()  # restore_runtime rebuilds what the config declares
    dlm = restore_runtime(load_quantized(folder, device=device, with_online=with_online), folder)
    return dlm if dtype is None else dlm.to(dtype)


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
