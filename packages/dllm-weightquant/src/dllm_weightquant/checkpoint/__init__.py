"""Quantized checkpoints: compressed-tensors ``pack-quantized`` and the ``dllmq`` format (FORMAT.md)."""

from dllm_weightquant.checkpoint.export import export_quantized
from dllm_weightquant.checkpoint.load import load_quantized
from dllm_weightquant.checkpoint.provenance import QuantProvenance, package_versions, read_provenance
from dllm_weightquant.checkpoint.qconfig import OnlineComputation, OnlineHadamard, compressed_tensors_config

__all__ = [
    "OnlineComputation",
    "OnlineHadamard",
    "QuantProvenance",
    "compressed_tensors_config",
    "export_quantized",
    "load_quantized",
    "package_versions",
    "read_provenance",
]
