"""LLaDA, Dream and LLaDA2 module trees implemented in this package (no remote code needed), and their
specs."""

from dllm_sampler.models.dream import DreamModel
from dllm_sampler.models.llada import LLaDAModelLM
from dllm_sampler.models.llada2 import KVCache, LLaDA2MoeModelLM, block_causal_mask
from dllm_sampler.models.spec import (
    ARCH_SPECS,
    ArchSpec,
    EvalDefaults,
    MoETopologyNames,
    TopologyNames,
    arch_spec,
    spec_for_config,
    spec_for_model,
    tiny_config,
)

__all__ = [
    "ARCH_SPECS",
    "ArchSpec",
    "DreamModel",
    "EvalDefaults",
    "KVCache",
    "LLaDA2MoeModelLM",
    "LLaDAModelLM",
    "MoETopologyNames",
    "TopologyNames",
    "arch_spec",
    "block_causal_mask",
    "spec_for_config",
    "spec_for_model",
    "tiny_config",
]
