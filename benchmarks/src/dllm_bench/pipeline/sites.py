"""The quantized sites of a model, read from its modules: what `dllmq quantize` prints and the checkpoint
records (``dllmq_sites.json``), so a comparison states exactly what each method quantized.

Sites: the block linears' weights, their inputs (the dynamic activation quantizers, and which inputs pass
an online rotation), and the attention activations Q, K (after RoPE) and V
(``dllm_actquant.attention_site_summary``). Each value is a short text; ``"mixed"`` when blocks differ.
"""

from __future__ import annotations

from dllm_actquant import ActQuantLinear, OnlineRotation, attention_site_summary
from dllm_kernels import QuantSpec
from dllm_sampler import DiffusionLM, Topology
from dllm_weightquant import QuantLinear
from torch import nn

__all__ = ["SITES_FILE", "format_sites", "quantized_sites"]

SITES_FILE = "dllmq_sites.json"


def _spec_text(spec: QuantSpec) -> str:
    cell = f"group{spec.group_size}" if spec.granularity == "group" else f"per-{spec.granularity}"
    return f"int{spec.bits} {'sym' if spec.symmetric else 'asym'} {cell}"


def _weight_text(module: nn.Module) -> str:
    if isinstance(module, QuantLinear):
        meta = module._meta
        if "gguf_type" in meta:
            return f"gguf {meta['gguf_type']}"
        return _spec_text(meta["spec"]) if "spec" in meta else f"multi-binary group{meta['group_size']}"
    return "float"


def _one(texts: set[str]) -> str:
    return next(iter(texts)) if len(texts) == 1 else "mixed"


def quantized_sites(dlm: DiffusionLM) -> dict[str, str]:
    """``{"weights", "linear inputs", "online rotations", "q", "k", "v", "qk_rotation": text}`` of ``dlm``."""
    weights: set[str] = set()
    inputs: set[str] = set()
    rotated: dict[str, set[str]] = {}
    topology = dlm.topology
    for block in topology:
        for role in block.linear_roles():
            chain = _chain(dlm.model.get_submodule(block.names[role]))
            weights.add(_weight_text(chain[-1]))
            quantizers = [m for m in chain if isinstance(m, ActQuantLinear)]
            inputs.add(_input_text(quantizers[0]) if quantizers else "float")
            for m in chain:
                if isinstance(m, OnlineRotation):
                    rotated.setdefault(role, set()).add(type(m.rotation).__name__)
    rotations = ", ".join(f"{role} ({'/'.join(sorted(kinds))})" for role, kinds in rotated.items()) or "none"
    return {
        "weights": _one(weights),
        "linear inputs": _one(inputs),
        "online rotations": rotations,
        **(attention_site_summary(dlm) if isinstance(topology, Topology) else {}),
    }


def _chain(module: nn.Module) -> list[nn.Module]:
    """``module`` and every wrapped ``.inner`` below it, down to the layer holding the weight."""
    out = [module]
    while hasattr(out[-1], "inner") and not isinstance(out[-1], QuantLinear):
        out.append(out[-1].inner)
    return out


def _input_text(quantizer: ActQuantLinear) -> str:
    c = quantizer.config
    text = f"int{c.bits} {'sym' if c.symmetric else 'asym'} per-{c.granularity}"
    return text if c.clip_ratio == 1.0 else f"{text} clip{c.clip_ratio:g}"


def format_sites(sites: dict[str, str]) -> list[str]:
    """One aligned line per site, for printing."""
    width = max(len(k) for k in sites)
    return [f"  {key:<{width}}  {value}" for key, value in sites.items()]
