"""LLaDA and Dream module trees implemented in this package (no remote code needed), and their specs."""

from dllm_sampler.models.dream import DreamModel
from dllm_sampler.models.llada import LLaDAModelLM
from dllm_sampler.models.spec import (
    ARCH_SPECS,
    ArchSpec,
    EvalDefaults,
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
    "LLaDAModelLM",
    "TopologyNames",
    "arch_spec",
    "spec_for_config",
    "spec_for_model",
    "tiny_config",
]
