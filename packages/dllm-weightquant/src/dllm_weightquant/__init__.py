"""dllm_weightquant: weight quantizers for diffusion LLMs and their checkpoints.

* Quantizers, ``fn(weight [out, in], hessian [in, in] | None, spec, config)``: :func:`rtn_quantize`
  (optional MSE clip search), :func:`gptq_quantize` (blocked GPTQ, static act-order, lazy group scales,
  damping retries, RTN fallback), :func:`cgq_quantize` (DLLMQuant's CGQ: GPTQ on the certainty-weighted
  Hessian), :func:`daq_quantize` and :func:`abmp_quantize` (Quant-dLLM's multi-binary DAQ with DOR/RSR and
  its blockwise mixed precision).
* Transform: :func:`apply_awq` (AWQ scales folded through the model topology), :func:`awq_search_scale`,
  :func:`awq_search_scale_on_outputs` (scored on a sublayer's or block's output), :func:`apply_awq_clip`
  and :func:`awq_search_clip` (llm-awq's clip search).
* Weights: :class:`QuantizedWeight` (uniform, packed), :class:`MultiBinaryWeight`; layers:
  :class:`QuantLinear`, :func:`replace_linear`, :func:`set_compute_dtype`.
* Checkpoints: :func:`export_quantized` / :func:`load_quantized` (compressed-tensors ``pack-quantized`` or
  the ``dllmq`` format of FORMAT.md), :class:`QuantProvenance`, :class:`OnlineComputation` (what runs
  online besides the weights, declared in the config).
* Pipeline steps: :func:`quantize_linears` (the step every quantizer shares), :func:`awq_step`; each
  method is registered in ``dllm_calib``'s method registry by :mod:`dllm_weightquant.methods`
  (:func:`quantizer_method` builds a quantizer's record).
"""

from dllm_weightquant.abmp import ABMPConfig, abmp_orders, abmp_quantize, check_abmp_spec
from dllm_weightquant.awq import (
    AWQ_GROUPS,
    AWQ_LOSSES,
    AWQConfig,
    AWQScale,
    apply_awq,
    apply_awq_clip,
    awq_search_scale,
    awq_search_scale_on_outputs,
    awq_step,
)
from dllm_weightquant.awq_clip import AWQClip, awq_search_clip
from dllm_weightquant.block_quantizer import quantize_linears, relative_weight_error
from dllm_weightquant.cgq import CGQConfig, cgq_quantize
from dllm_weightquant.checkpoint import (
    OnlineComputation,
    OnlineHadamard,
    QuantProvenance,
    compressed_tensors_config,
    export_quantized,
    load_quantized,
    package_versions,
    read_provenance,
)
from dllm_weightquant.daq import DAQConfig, check_daq_spec, daq_quantize, dor_weights, fit_multibinary
from dllm_weightquant.fuse import fuse_experts, fuse_shared_inputs
from dllm_weightquant.gptq import GPTQConfig, gptq_quantize
from dllm_weightquant.grid import ClipSearch
from dllm_weightquant.hessian import hessian_from_inputs, layer_objective
from dllm_weightquant.methods import quantizer_method
from dllm_weightquant.multibinary import MultiBinaryWeight
from dllm_weightquant.qlinear import QuantLinear, replace_linear, set_compute_dtype
from dllm_weightquant.qweight import QuantizedWeight
from dllm_weightquant.rtn import RTNConfig, fake_quantize_weight, rtn_quantize

__all__ = [
    "AWQ_GROUPS",
    "AWQ_LOSSES",
    "ABMPConfig",
    "AWQClip",
    "AWQConfig",
    "AWQScale",
    "CGQConfig",
    "ClipSearch",
    "DAQConfig",
    "GPTQConfig",
    "MultiBinaryWeight",
    "OnlineComputation",
    "OnlineHadamard",
    "QuantLinear",
    "QuantProvenance",
    "QuantizedWeight",
    "RTNConfig",
    "abmp_orders",
    "abmp_quantize",
    "apply_awq",
    "apply_awq_clip",
    "awq_search_clip",
    "awq_search_scale",
    "awq_search_scale_on_outputs",
    "awq_step",
    "cgq_quantize",
    "check_abmp_spec",
    "check_daq_spec",
    "compressed_tensors_config",
    "daq_quantize",
    "dor_weights",
    "export_quantized",
    "fake_quantize_weight",
    "fit_multibinary",
    "fuse_experts",
    "fuse_shared_inputs",
    "gptq_quantize",
    "hessian_from_inputs",
    "layer_objective",
    "load_quantized",
    "package_versions",
    "quantize_linears",
    "quantizer_method",
    "read_provenance",
    "relative_weight_error",
    "replace_linear",
    "rtn_quantize",
    "set_compute_dtype",
]
