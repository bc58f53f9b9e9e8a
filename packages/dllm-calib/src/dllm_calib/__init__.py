"""Diffusion-aware calibration states and statistics collectors for dLLM quantization.

- States: `CalibrationState`, `CalibrationSet` (+ `Provenance`), saved as safetensors + JSON, exported for
  llm-compressor / GPTQModel / AutoAWQ (`to_calibration_list`, `to_hf_dataset`).
- Builders (registry `BUILDERS`): plain windows, random-time masking, Quant-dLLM's MCS, DLLMQuant's TMAS;
  text from a `TextSource`.
- Collectors driven by `collect`: token-weighted Hessians (uniform / CGQ certainty / user weights),
  per-channel absmax and mean |x|, recomputed attention probabilities; optionally per mask-ratio bucket.
"""

from dllm_calib.batching import Batch, iter_batches
from dllm_calib.buckets import bucket_of, mask_ratio_buckets, quota_counts
from dllm_calib.builders import (
    BUILDERS,
    BuilderConfig,
    MCSConfig,
    PlainConfig,
    RandomConfig,
    TMASConfig,
    build_calibration_set,
    build_mcs,
    build_plain,
    build_random,
    build_tmas,
    builder_config,
    mcs_visibility,
    register_builder,
)
from dllm_calib.collectors import (
    AttentionCollector,
    AttentionResult,
    AttentionSite,
    CertaintyWeight,
    ChannelStats,
    ChannelStatsCollector,
    CollectionSession,
    Collector,
    HessianCollector,
    HessianStats,
    HookPoint,
    NonFiniteActivationError,
    TensorWeight,
    TokenWeighting,
    UniformWeight,
    attach_collectors,
    attention_probs,
    attention_sites,
    collect,
    resolve_targets,
)
from dllm_calib.confidence import score_confidence
from dllm_calib.export import to_calibration_list, to_hf_dataset
from dllm_calib.sources import (
    ArithmeticSource,
    JsonlSource,
    ListSource,
    StdlibCodeSource,
    TextFileSource,
    TextSource,
    text_source,
)
from dllm_calib.state import CalibrationSet, CalibrationState, Provenance
from dllm_calib.storage import CorruptCalibrationSetError, load_calibration_set, save_calibration_set

__all__ = [
    "BUILDERS",
    "ArithmeticSource",
    "AttentionCollector",
    "AttentionResult",
    "AttentionSite",
    "Batch",
    "BuilderConfig",
    "CalibrationSet",
    "CalibrationState",
    "CertaintyWeight",
    "ChannelStats",
    "ChannelStatsCollector",
    "CollectionSession",
    "Collector",
    "CorruptCalibrationSetError",
    "HessianCollector",
    "HessianStats",
    "HookPoint",
    "JsonlSource",
    "ListSource",
    "MCSConfig",
    "NonFiniteActivationError",
    "PlainConfig",
    "Provenance",
    "RandomConfig",
    "StdlibCodeSource",
    "TMASConfig",
    "TensorWeight",
    "TextFileSource",
    "TextSource",
    "TokenWeighting",
    "UniformWeight",
    "attach_collectors",
    "attention_probs",
    "attention_sites",
    "bucket_of",
    "build_calibration_set",
    "build_mcs",
    "build_plain",
    "build_random",
    "build_tmas",
    "builder_config",
    "collect",
    "iter_batches",
    "load_calibration_set",
    "mask_ratio_buckets",
    "mcs_visibility",
    "quota_counts",
    "register_builder",
    "resolve_targets",
    "save_calibration_set",
    "score_confidence",
    "text_source",
    "to_calibration_list",
    "to_hf_dataset",
]
