"""Read a GGUF written by `write_gguf` back into a float ``DiffusionLM`` (no llama.cpp needed).

Every tensor is dequantized with gguf's own ``gguf.quants.dequantize``, mapped back to its Hugging Face name
(``dllmq.tensor_names``) and un-permuted (LLaDA's q/k rows); the config and tokenizer come from the file's
``dllmq.hf_config`` and ``tokenizer.huggingface.json``. The model then runs the dequantized weights in
float32, the numbers llama.cpp multiplies with (up to its own arithmetic).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dllm_sampler import CheckpointError, DiffusionLM, DreamConfig, LLaDAConfig
from tokenizers import Tokenizer

from dllm_weightquant.gguf._lib import import_gguf
from dllm_weightquant.gguf.export import GENERATION_KEY, HF_CONFIG_KEY, NAMES_KEY, SOURCE_KEY
from dllm_weightquant.gguf.names import arch_of, unpermute_rows

__all__ = ["gguf_source_model", "read_gguf", "read_gguf_tensors"]


def _string(reader: Any, key: str, path: Path) -> str:
    field = reader.get_field(key)
    if field is None:
        raise CheckpointError(
            f"{path} has no {key}: it was not written by dllmq's GGUF export, which read-back needs "
            "(run it with llama.cpp instead)"
        )
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def gguf_source_model(path: str | Path) -> str:
    """The float model a dllmq GGUF records (``dllmq.source_model``), "" when none."""
    reader = import_gguf().GGUFReader(str(Path(path).expanduser()))
    field = reader.get_field(SOURCE_KEY)
    return "" if field is None else bytes(field.parts[field.data[0]]).decode("utf-8")


def read_gguf_tensors(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Any]:
    """``(hf_config, {Hugging Face name: float32 tensor}, reader)`` of a dllmq GGUF, dequantized by gguf."""
    gguf = import_gguf()
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file {path}")
    reader = gguf.GGUFReader(str(path))
    hf = json.loads(_string(reader, HF_CONFIG_KEY, path))
    names = json.loads(_string(reader, NAMES_KEY, path))
    arch = arch_of(hf)
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        if tensor.name not in names:
            raise CheckpointError(f"{path}: tensor {tensor.name} is not in {NAMES_KEY}")
        values = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
        key = names[tensor.name]
        state[key] = unpermute_rows(
            arch, hf, key, torch.from_numpy(np.array(values, np.float32)).reshape(shape)
        )
    return hf, state, reader


def read_gguf(
    path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> DiffusionLM:
    """The model in a dllmq GGUF file, dequantized to float32 (``dtype`` casts it)."""
    hf, state, reader = read_gguf_tensors(path)
    config_cls = LLaDAConfig if arch_of(hf) == "llada" else DreamConfig
    config = config_cls.from_dict(hf)
    tokenizer = Tokenizer.from_str(_string(reader, "tokenizer.huggingface.json", Path(path)))
    files = json.loads(_string(reader, GENERATION_KEY, Path(path)))
    dlm = DiffusionLM.from_config(config, seed=0, tokenizer=tokenizer)
    dlm.tokenizer_files = files
    expected = dlm.model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"{path} lacks {len(missing)} tensor(s) of the model, e.g. {missing[0]}")
    dlm.model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    dlm.model.eval().requires_grad_(False)
    dlm.model.to(device=device, dtype=dtype or torch.float32)
    return dlm
