"""dllm_sampler: LLaDA/Dream/LLaDA2 models, loading, topology, masked-diffusion samplers and likelihood."""

# --- models, loading and topology ---
from dllm_sampler.adapter import DiffusionLM
from dllm_sampler.atomic import FolderInTheWay, check_replaceable
from dllm_sampler.config import ConfigError, DreamConfig, LLaDAConfig
from dllm_sampler.config_llada2 import LLaDA2MoeConfig
from dllm_sampler.io import (
    CheckpointError,
    all_finite,
    atomic_folder,
    check_finite,
    describe_nonfinite,
    load,
    save,
    write_weights,
)
from dllm_sampler.models import ArchSpec, DreamModel, LLaDA2MoeModelLM, LLaDAModelLM, tiny_config
from dllm_sampler.moe_topology import EXPERT_PARTS, MoEBlockTopology, MoETopology
from dllm_sampler.registry import available_models
from dllm_sampler.rope import RopeFn, model_rope
from dllm_sampler.topology import INPUT_GROUPS, LINEAR_ROLES, BlockTopology, Topology, weight_holder

__all__ = [
    "EXPERT_PARTS",
    "INPUT_GROUPS",
    "LINEAR_ROLES",
    "ArchSpec",
    "BlockTopology",
    "CheckpointError",
    "ConfigError",
    "DiffusionLM",
    "DreamConfig",
    "DreamModel",
    "FolderInTheWay",
    "LLaDA2MoeConfig",
    "LLaDA2MoeModelLM",
    "LLaDAConfig",
    "LLaDAModelLM",
    "MoEBlockTopology",
    "MoETopology",
    "RopeFn",
    "Topology",
    "all_finite",
    "atomic_folder",
    "available_models",
    "check_finite",
    "check_replaceable",
    "describe_nonfinite",
    "load",
    "model_rope",
    "save",
    "tiny_config",
    "weight_holder",
    "write_weights",
]

# --- samplers, forward noise and likelihood (step, noise, generate*, likelihood) ---
from dllm_sampler.generate import GenerationConfig, default_generation_config, generate
from dllm_sampler.generate_block import BlockDiffusionConfig, generate_block, transfer_schedule
from dllm_sampler.generate_dream import (
    DreamGenerationConfig,
    dream_sample_tokens,
    dream_transfer_count,
    generate_dream,
)
from dllm_sampler.generate_llada import (
    LLADA_EOT_TOKEN_ID,
    LLaDAGenerationConfig,
    add_gumbel_noise,
    generate_llada,
    linear_transfer_schedule,
)
from dllm_sampler.likelihood import (
    dream_likelihood_noise,
    elbo_nll_per_token,
    llada_likelihood_noise,
    llada_mask_counts,
    log_likelihood,
)
from dllm_sampler.noise import forward_noise, llada_loss
from dllm_sampler.step import MaskPredictor, StepHook, StepState

__all__ += [
    "LLADA_EOT_TOKEN_ID",
    "BlockDiffusionConfig",
    "DreamGenerationConfig",
    "GenerationConfig",
    "LLaDAGenerationConfig",
    "MaskPredictor",
    "StepHook",
    "StepState",
    "add_gumbel_noise",
    "default_generation_config",
    "dream_likelihood_noise",
    "dream_sample_tokens",
    "dream_transfer_count",
    "elbo_nll_per_token",
    "forward_noise",
    "generate",
    "generate_block",
    "generate_dream",
    "generate_llada",
    "linear_transfer_schedule",
    "llada_likelihood_noise",
    "llada_loss",
    "llada_mask_counts",
    "log_likelihood",
    "transfer_schedule",
]
