"""Weight memory of a diffusion LM: what its block linears store, and the same model in floating point.

Every tensor of the model's ``state_dict`` (what a checkpoint holds) is counted once, even when shared
(tied embeddings, a rotation shared by q/k/v), and put in one of four parts:

* **linear weights**: for every block linear (q, k, v, o, gate, up, down of each block), the tensors of the
  layer that holds its weight, found through wrappers (``.inner`` of online rotations and activation
  quantizers): a float ``weight`` for ``nn.Linear``; ``weight_packed`` (int32 codes) + ``weight_scale`` +
  ``weight_zero_point`` (+ ``weight_g_idx``) for a uniform ``dllm_weightquant.QuantLinear``;
  ``weight_planes`` + ``weight_alpha_r`` / ``weight_alpha_c`` + ``weight_orders`` for a multi-binary
  (DAQ / ABMP) one;
* **linear biases** (Dream's q/k/v biases);
* **wrappers**: tensors the wrappers themselves store (DuQuant block rotations, static activation
  parameters, the integer codes of a kernel-mode ``ActQuantLinear``, which also keeps its float inner
  weight);
* **other**: embedding, LM head, norms and anything else.

The float equivalent is the same model with every block linear stored as a float weight of ``float_dtype``
(default: the embedding's dtype, i.e. what the unquantized model stores) and no wrappers; the other parts
are unchanged. Sizes are bytes; bits per weight are ``8 * linear weight bytes / number of weights``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from dllm_sampler import DiffusionLM
from torch import Tensor, nn

__all__ = ["WeightMemory", "resident_bytes", "weight_memory"]


@dataclass(frozen=True)
class WeightMemory:
    """Stored bytes of a model, split as in the module docstring.

    Attributes:
        n_weights: weights of the block linears (sum of ``out * in``).
        linear_weight_bytes: bytes the block linears store for their weights (codes, scales, zero points...).
        linear_bias_bytes: bytes of the block linears' biases.
        wrapper_bytes: bytes stored by wrappers around the block linears.
        other_bytes: bytes of everything else (embedding, head, norms).
        resident_bytes: bytes of every parameter and buffer in memory, persistent or not (e.g. the dense
            weight a fake-mode ``QuantLinear`` keeps beside its codes), each storage counted once.
        float_dtype: the dtype of the float equivalent's block linear weights.
    """

    n_weights: int
    linear_weight_bytes: int
    linear_bias_bytes: int
    wrapper_bytes: int
    other_bytes: int
    resident_bytes: int
    float_dtype: torch.dtype

    @property
    def linear_bytes(self) -> int:
        """Bytes of the block linears: weights, biases and wrappers."""
        return self.linear_weight_bytes + self.linear_bias_bytes + self.wrapper_bytes

    @property
    def total_bytes(self) -> int:
        """Bytes of the whole stored model."""
        return self.linear_bytes + self.other_bytes

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per block linear weight, scales and zero points included (float32 weights: 32)."""
        return 8.0 * self.linear_weight_bytes / self.n_weights

    @property
    def float_linear_bytes(self) -> int:
        """Bytes of the block linears stored as ``float_dtype`` weights (biases as they are)."""
        return self.n_weights * self.float_dtype.itemsize + self.linear_bias_bytes

    @property
    def float_total_bytes(self) -> int:
        """Bytes of the float equivalent model."""
        return self.float_linear_bytes + self.other_bytes

    @property
    def linear_ratio_to_float(self) -> float:
        """``linear_bytes / float_linear_bytes`` (below 1: the block linears shrank)."""
        return self.linear_bytes / self.float_linear_bytes

    @property
    def ratio_to_float(self) -> float:
        """``total_bytes / float_total_bytes``."""
        return self.total_bytes / self.float_total_bytes

    def to_dict(self) -> dict[str, Any]:
        """The fields and the derived sizes, JSON-ready (dtype as its name)."""
        return {
            "n_weights": self.n_weights,
            "linear_weight_bytes": self.linear_weight_bytes,
            "linear_bias_bytes": self.linear_bias_bytes,
            "wrapper_bytes": self.wrapper_bytes,
            "other_bytes": self.other_bytes,
            "resident_bytes": self.resident_bytes,
            "float_dtype": str(self.float_dtype).removeprefix("torch."),
            "linear_bytes": self.linear_bytes,
            "total_bytes": self.total_bytes,
            "bits_per_weight": self.bits_per_weight,
            "float_linear_bytes": self.float_linear_bytes,
            "float_total_bytes": self.float_total_bytes,
            "linear_ratio_to_float": self.linear_ratio_to_float,
            "ratio_to_float": self.ratio_to_float,
        }


def _weight_holder(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    """(qualified name, module) of the layer holding the weight of block linear ``name``, through the
    ``.inner`` chain of wrappers."""
    module, path = model.get_submodule(name), name
    while isinstance(getattr(module, "inner", None), nn.Module):
        module, path = module.inner, f"{path}.inner"
    return path, module


def _storage_key(t: Tensor) -> tuple[int, int, int]:
    """Identity of the memory a tensor views: (storage address, offset, bytes); meta tensors by object id."""
    if t.device.type == "meta":
        return (id(t), 0, t.nbytes)
    return (t.untyped_storage().data_ptr(), t.storage_offset() * t.element_size(), t.nbytes)


def _linear_of(key: str, linears: list[str]) -> str | None:
    """The block linear whose module contains state-dict entry ``key``, if any."""
    return next((name for name in linears if key.startswith(f"{name}.")), None)


def weight_memory(dlm: DiffusionLM, float_dtype: torch.dtype | None = None) -> WeightMemory:
    """Stored bytes of ``dlm`` split into block linear weights / biases / wrappers / the rest.

    Args:
        dlm: any ``DiffusionLM`` (float, fake-quantized or loaded from a quantized folder).
        float_dtype: dtype of the float equivalent's block linear weights; default the embedding's dtype.
    """
    model = dlm.model
    topology = dlm.topology
    linears = topology.linear_names()
    holders = {name: _weight_holder(model, name) for name in linears}  # name -> (holder path, module)
    n_weights = sum(int(m.in_features) * int(m.out_features) for _, m in holders.values())
    parts = {"weight": 0, "bias": 0, "wrapper": 0, "other": 0}
    seen: set[tuple[int, int, int]] = set()
    for key, tensor in model.state_dict(keep_vars=True).items():
        identity = _storage_key(tensor)
        if identity in seen:
            continue
        seen.add(identity)
        linear = _linear_of(key, linears)
        if linear is None:
            part = "other"
        elif key == f"{holders[linear][0]}.bias":
            part = "bias"
        elif key.startswith(f"{holders[linear][0]}."):
            part = "weight"
        else:
            part = "wrapper"
        parts[part] += tensor.nbytes
    return WeightMemory(
        n_weights=n_weights,
        linear_weight_bytes=parts["weight"],
        linear_bias_bytes=parts["bias"],
        wrapper_bytes=parts["wrapper"],
        other_bytes=parts["other"],
        resident_bytes=resident_bytes(model),
        float_dtype=float_dtype or topology.embedding.weight.dtype,
    )


def resident_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers of ``model`` (persistent or not), each storage counted once."""
    storages: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        if t.device.type == "meta":
            storages[id(t)] = t.nbytes
        else:
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())
