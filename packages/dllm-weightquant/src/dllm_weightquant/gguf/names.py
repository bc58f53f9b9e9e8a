"""Tensor names and layouts between dllmq (the published Hugging Face names) and llama.cpp's GGUF.

Names map through gguf's own ``TensorNameMap`` for the architecture (``llada`` or ``dream``), as
``convert_hf_to_gguf.py`` does. For LLaDA the converter permutes the rows of q_proj and k_proj (and their
biases) from the Hugging Face rotate-half RoPE layout to llama.cpp's interleaved one (``undo_permute``);
Dream keeps Hugging Face's layout (llama.cpp runs it with NeoX RoPE). The permutation reorders rows only,
so GGUF blocks, which run along rows, are moved whole: quantized bytes stay bit-identical.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from dllm_weightquant.gguf._lib import import_gguf

__all__ = ["ARCHES", "arch_of", "gguf_name", "permute_rows", "unpermute_rows"]

ARCHES = {"llada": "LLADA", "dream": "DREAM"}


def arch_of(hf_config: dict[str, Any]) -> str:
    """``"llada"`` or ``"dream"`` from a Hugging Face config (``model_type``)."""
    kind = str(hf_config.get("model_type", "")).lower()
    if kind not in ARCHES:
        raise ValueError(
            f"GGUF export supports LLaDA and Dream (model_type llada / Dream), got model_type {kind!r}"
        )
    return kind


def gguf_name(arch: str, n_layers: int, name: str) -> str:
    """llama.cpp's name of the Hugging Face tensor ``name`` (e.g. ``blk.0.attn_q.weight``)."""
    gguf = import_gguf()
    table = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, ARCHES[arch]), n_layers)
    mapped = table.get_name(name, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise ValueError(f"{name}: no llama.cpp {arch} tensor corresponds to it; GGUF cannot hold it")
    return mapped


def _heads(hf_config: dict[str, Any], name: str) -> int | None:
    """Heads of ``name`` when the LLaDA converter permutes it (q: heads, k: kv heads), else None."""
    heads = int(hf_config.get("n_heads", hf_config.get("num_attention_heads", 0)))
    kv = hf_config.get("n_kv_heads", hf_config.get("num_key_value_heads")) or heads
    if name.endswith(("q_proj.weight", "q_proj.bias")):
        return heads
    if name.endswith(("k_proj.weight", "k_proj.bias")):
        return int(kv)
    return None


def permute_rows(arch: str, hf_config: dict[str, Any], name: str, rows: Tensor) -> Tensor:
    """Rows of ``name`` (``[out, ...]``, any dtype) in llama.cpp's order (LLaDA q/k; else unchanged)."""
    heads = _heads(hf_config, name) if arch == "llada" else None
    if heads is None:
        return rows
    out = rows.shape[0]
    return rows.reshape(heads, 2, out // heads // 2, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape)


def unpermute_rows(arch: str, hf_config: dict[str, Any], name: str, rows: Tensor) -> Tensor:
    """Inverse of `permute_rows`."""
    heads = _heads(hf_config, name) if arch == "llada" else None
    if heads is None:
        return rows
    out = rows.shape[0]
    return rows.reshape(heads, out // heads // 2, 2, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape)
