"""What a quantized model computes online, in the terms of a checkpoint's ``quantization_config``.

`online_computation` reads the record of the run-time wrappers (``dllm_actquant.stripped_wrappers``) and
says which parts compressed-tensors' schema expresses and which it cannot:

* a dynamic per-token activation quantizer without clipping: ``input_activations`` of the Linear's
  config group (``strategy "token"``, ``dynamic: true``, symmetric or not); a clip ratio below 1 has no
  compressed-tensors field;
* QuaRot's R4, the online Hadamard of the down-projection input: a ``"hadamard"`` transform at the
  Linear's ``input`` when its width is a power of two (compressed-tensors' deterministic Hadamard is
  Sylvester's, which is ours at those widths; the Kronecker widths such as 12 * 2^k have no counterpart);
* QuaRot's cross-head rotation of the o-projection input ``C kron I_Dh`` with ``C`` the normalised
  Hadamard of the head count: since ``C kron I = (I kron H_Dh)(S_{H Dh} / sqrt(H Dh))`` for Sylvester
  matrices and a per-head map of the values commutes with attention, it is written as a per-head
  Hadamard (``head_dim`` Dh) at the v-projection ``output`` plus a full Hadamard at the o-projection
  ``input``. A random orthogonal ``C`` (head counts without a Hadamard order) cannot be written;
* QuaRot's R3, the per-head Hadamard of queries and keys after RoPE: ``"hadamard"`` transforms at the
  ``q_attn`` and ``k_cache`` locations of the attention module (the q/k site's parent: Dream's
  ``self_attn``, LLaDA's block), as llm-compressor's SpinQuant R3 writes them;
* DuQuant's block rotations, V quantizers and Q/K quantizers have no compressed-tensors form: they make
  the export a ``dllmq`` checkpoint that other tools refuse.
"""

from __future__ import annotations

from typing import Any

import dllm_kernels
import torch
from dllm_actquant import ActQuantConfig, RuntimeState
from dllm_kernels import QuantSpec
from dllm_sampler import DiffusionLM
from dllm_weightquant import OnlineComputation, OnlineHadamard

__all__ = ["online_computation"]

QK_LOCATIONS = ("q_attn", "k_cache")


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _rotation(
    name: str, rotation: dict[str, Any], tensors: dict[str, torch.Tensor], v_of_o: dict[str, str]
) -> tuple[list[OnlineHadamard], str | None]:
    """The online Hadamards equal to one recorded rotation, or the reason there are none."""
    kind = rotation["kind"]
    if kind == "hadamard":
        size = int(rotation["size"])
        if _power_of_two(size):
            return [OnlineHadamard(name, "input")], None
        return [], f"online Hadamard rotations of order {size} (not a power of two)"
    if kind == "heads":
        matrix = tensors[rotation["matrix"]].to(torch.float64)
        heads, head_dim = matrix.shape[0], int(rotation["head_dim"])
        sylvester = (
            _power_of_two(heads)
            and _power_of_two(head_dim)
            and torch.allclose(matrix, dllm_kernels.hadamard_matrix(heads).to(torch.float64), atol=1e-12)
        )
        if sylvester and name in v_of_o:
            return [OnlineHadamard(v_of_o[name], "output", head_dim), OnlineHadamard(name, "input")], None
        return [], "cross-head rotations of the o-projection input by a non-Hadamard mixing matrix"
    return [], "DuQuant block rotations and permutations of linear inputs"


def _activations(config: ActQuantConfig) -> tuple[QuantSpec | None, str | None]:
    if not config.dynamic:
        return None, "static per-tensor activation quantizers"
    if config.clip_ratio != 1.0:
        return None, f"activation quantizers clipped at {config.clip_ratio:g} of the token range"
    return QuantSpec(config.bits, config.symmetric, "token"), None


def online_computation(dlm: DiffusionLM, runtime: RuntimeState) -> OnlineComputation:
    """``runtime`` (the stripped wrappers of ``dlm``) as the checkpoint's `OnlineComputation`."""
    record = runtime.record
    # the v projection whose output an o-input Hadamard may move to (none in a fused-QKV block)
    v_of_o = {block.names["o"]: block.names["v"] for block in dlm.topology if "v" in block.names}
    activations: dict[str, QuantSpec] = {}
    hadamards: list[OnlineHadamard] = []
    reasons: set[str] = set()
    for name, entry in (record.get("linears") or {}).items():
        if "activations" in entry:
            spec, reason = _activations(ActQuantConfig(**entry["activations"]))
            if spec is not None:
                activations[name] = spec
            if reason:
                reasons.add(reason)
        if "rotation" in entry:
            found, reason = _rotation(name, entry["rotation"], runtime.tensors, v_of_o)
            hadamards.extend(found)
            if reason:
                reasons.add(reason)
    if record.get("vquant"):
        reasons.add("V quantizers (attention values)")
    for site, chain in (record.get("attention") or {}).items():
        attention = site.rpartition(".")[0]
        for wrapper in chain:
            if "quant" in wrapper:
                reasons.add("Q/K quantizers")
            elif _power_of_two(int(wrapper["hadamard"])):
                head_dim = int(wrapper["hadamard"])
                hadamards.extend(OnlineHadamard(attention, at, head_dim) for at in QK_LOCATIONS)
            else:
                reasons.add("online Hadamard of queries and keys of a head dim that is not a power of two")
    return OnlineComputation(activations, tuple(hadamards), tuple(sorted(reasons)))
