"""Load a quantized checkpoint folder (compressed-tensors pack-quantized or dllmq) as a ``DiffusionLM``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from dllm_sampler import DiffusionLM, DreamConfig, LLaDA2MoeConfig, LLaDAConfig, check_finite
from dllm_sampler.models import spec_for_model
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import Tensor, nn

from dllm_weightquant.checkpoint.export import CONFIG_FILE, INDEX_FILE, SINGLE_FILE, TOKENIZER_FILE
from dllm_weightquant.checkpoint.qconfig import declared_online, module_formats
from dllm_weightquant.checkpoint.tensors import multibinary_from_disk, uniform_from_disk
from dllm_weightquant.fuse import fuse_experts, fuse_shared_inputs
from dllm_weightquant.qlinear import QuantLinear, replace_linear

__all__ = ["LOAD_MODES", "load_quantized"]

LOAD_MODES = ("auto", "kernel", "fake")
PASSTHROUGH_FILES = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
_CONFIG_CLASSES = (LLaDAConfig, DreamConfig, LLaDA2MoeConfig)


def _config(data: dict[str, Any], file: Path) -> LLaDAConfig | DreamConfig | LLaDA2MoeConfig:
    archs = set(data.get("architectures") or [])
    for cls in _CONFIG_CLASSES:
        if archs & set(cls.ARCHITECTURES) or (not archs and data.get("model_type") == cls.MODEL_TYPE):
            return cls.from_dict(data)
    raise ValueError(
        f"{file}: unsupported model (architectures={sorted(archs)}, model_type={data.get('model_type')!r})"
    )


def _read_state(folder: Path) -> dict[str, Tensor]:
    """Every tensor of the folder's safetensors files; raises ``CheckpointError`` for a floating one with
    NaN/Inf values."""
    index = folder / INDEX_FILE
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    elif (folder / SINGLE_FILE).is_file():
        files = [SINGLE_FILE]
    else:
        raise FileNotFoundError(f"{folder} has neither {SINGLE_FILE} nor {INDEX_FILE}")
    state: dict[str, Tensor] = {}
    for f in files:
        tensors = load_file(str(folder / f))
        for name, tensor in tensors.items():
            check_finite(tensor, name, folder / f)
        state.update(tensors)
    return state


def _tokenizer(folder: Path) -> tuple[Tokenizer | None, dict[str, dict[str, Any]]]:
    files = {
        n: json.loads((folder / n).read_text(encoding="utf-8"))
        for n in PASSTHROUGH_FILES
        if (folder / n).is_file()
    }
    if not (folder / TOKENIZER_FILE).is_file():
        warnings.warn(f"{folder} has no {TOKENIZER_FILE}: the model loads without a tokenizer", stacklevel=3)
        return None, files
    return Tokenizer.from_file(str(folder / TOKENIZER_FILE)), files


def load_quantized(
    path: str | Path, mode: str = "auto", device: str | torch.device = "cpu", *, with_online: bool = False
) -> DiffusionLM:
    """Load a folder written by :func:`export_quantized` (or a pack-quantized LLaDA/Dream/LLaDA2 checkpoint).

    Quantized Linears become ``QuantLinear`` modules; ``mode`` "kernel" (low-bit GEMM), "fake"
    (dequantized float weight in the checkpoint's dtype) or "auto" (kernel for uniform weights, fake for
    multi-binary ones). Every other tensor is loaded as stored. Only the weights are loaded: a checkpoint
    whose config declares computation that runs online (input activation quantizers, online transforms,
    dllmq's run-time wrappers) is refused with a ``ValueError`` naming it, unless ``with_online=True``
    says the caller restores that computation itself (``dllm_bench.loading.load_any`` does, from
    ``dllmq_runtime.json``). Raises ``ValueError`` naming missing or unexpected tensors and unsupported
    formats, and ``dllm_sampler.CheckpointError`` (a ``ValueError``) naming a floating tensor (weight,
    scale, norm ...) with NaN or Inf values.
    """
    if mode not in LOAD_MODES:
        raise ValueError(f"mode must be one of {LOAD_MODES}, got {mode!r}")
    folder = Path(path).expanduser()
    file = folder / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_FILE}")
    data = json.loads(file.read_text(encoding="utf-8"))
    qconfig = data.pop("quantization_config", None)
    if not isinstance(qconfig, dict):
        raise ValueError(
            f"{file} has no quantization_config: not a quantized checkpoint (use dllm_sampler.load)"
        )
    online = declared_online(qconfig)
    if online and not with_online:
        raise ValueError(
            f"{file} declares computation that runs online besides the weights ({'; '.join(online)}); "
            "load_quantized restores only the weights, which would run a different model: load a dllmq "
            "export with dllm_bench.loading.load_any, or pass with_online=True when you restore it yourself"
        )
    with torch.device("meta"):
        dlm = DiffusionLM.from_config(_config(data, file), device="meta")
    model = dlm.model
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    formats = module_formats(qconfig, linears)
    state = _read_state(folder)
    dtype = state.get(f"{spec_for_model(model).names.embedding}.weight", torch.empty(0)).dtype

    for name, fmt in formats.items():
        old = model.get_submodule(name)
        prefix = f"{name}."
        tensors = {k[len(prefix) :]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
        bias = tensors.pop("bias", None)
        if fmt.kind == "uniform":
            assert fmt.spec is not None
            qweight = uniform_from_disk(tensors, fmt.spec, name, fmt.layout)
        else:
            assert fmt.group_size is not None
            qweight = multibinary_from_disk(tensors, fmt.group_size, name)
        if (qweight.out_features, qweight.in_features) != (old.out_features, old.in_features):
            raise ValueError(
                f"{name}: stored weight_shape {list(qweight.shape)} does not match the model "
                f"[{old.out_features}, {old.in_features}]"
            )
        chosen = mode if mode != "auto" else ("kernel" if fmt.kind == "uniform" else "fake")
        replace_linear(model, name, QuantLinear(qweight, bias, chosen, dtype))

    quant_keys = {f"{n}.{k}" for n in formats for k in model.get_submodule(n).state_dict()}
    expected = set(model.state_dict()) - quant_keys
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{folder}: tensors do not match the model; missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    model.load_state_dict(state, strict=False, assign=True)
    model.to(device).eval().requires_grad_(False)
    fuse_shared_inputs(model)  # q/k/v and gate/up share one GEMM on the CPU (dllm_weightquant.fuse)
    fuse_experts(model)  # a run of routed experts shares one dequantization launch
    tokenizer, files = _tokenizer(folder)
    return DiffusionLM(model, tokenizer, files)
