"""Statistics collectors and the `collect` driver."""

from dllm_calib.collectors.attention import (
    AttentionCollector,
    AttentionResult,
    AttentionSite,
    attention_probs,
    attention_sites,
)
from dllm_calib.collectors.base import Collector, HookPoint
from dllm_calib.collectors.channel import ChannelStats, ChannelStatsCollector
from dllm_calib.collectors.driver import (
    CollectionSession,
    NonFiniteActivationError,
    attach_collectors,
    collect,
    resolve_targets,
)
from dllm_calib.collectors.hessian import HessianCollector, HessianStats
from dllm_calib.collectors.routed import RoutedHessianCollector, routed_tokens
from dllm_calib.collectors.samples import InputSampleCollector, InputSamples
from dllm_calib.collectors.weights import CertaintyWeight, TensorWeight, TokenWeighting, UniformWeight

__all__ = [
    "AttentionCollector",
    "AttentionResult",
    "AttentionSite",
    "CertaintyWeight",
    "ChannelStats",
    "ChannelStatsCollector",
    "CollectionSession",
    "Collector",
    "HessianCollector",
    "HessianStats",
    "HookPoint",
    "InputSampleCollector",
    "InputSamples",
    "NonFiniteActivationError",
    "RoutedHessianCollector",
    "TensorWeight",
    "TokenWeighting",
    "UniformWeight",
    "attach_collectors",
    "attention_probs",
    "attention_sites",
    "collect",
    "resolve_targets",
    "routed_tokens",
]
