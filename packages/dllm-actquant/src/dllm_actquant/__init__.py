"""dllm_actquant: activation quantization and equivalence transforms for dLLMs (LLaDA, Dream).

* Quantizers: `ActQuantConfig` (dynamic per-token or static per-tensor, int8/int4, symmetric or not, clip),
  `ActQuantLinear` (fake-quantized, or real ``dllm_kernels`` int8 / W4A8 / W4A4 GEMMs),
  `quantize_activations` to wrap a model; V quantization (`VQuantConfig`, `attach_v_quantizers`).
* Transforms (float-model invariant, folded through ``dllm_sampler.Topology``): `apply_smoothquant`,
  `apply_quarot` (R1, R2, online R4 via `OnlineHadamard`), `apply_duquant`; IA-AQ (`calibrate_iaaq`).
* Helpers: `capture_inputs` (calibration samples and absmax), `linear_targets` (names through wrappers),
  metrics (`outlier_ratio`, `channel_spread`, `range_imbalance`), quantization markers.
"""

from dllm_actquant.act_quant import (
    ActQuantConfig,
    StaticActParams,
    fake_quantize_activation,
    quantize_activation,
)
from dllm_actquant.apply import quantize_activations
from dllm_actquant.capture import CapturedInputs, capture_inputs
from dllm_actquant.duquant import (
    DUQUANT_SITES,
    DuQuantConfig,
    DuQuantResult,
    apply_duquant,
    duquant_rotation,
    effective_block_size,
    greedy_block_rotation,
    zigzag_permutation,
)
from dllm_actquant.guards import QUANTIZED_ATTR, TransformError, is_quantized, mark_quantized
from dllm_actquant.hadamard import check_hadamard_size, random_hadamard
from dllm_actquant.iaaq import IAAQAccumulator, IAAQConfig, IAAQResult, calibrate_iaaq, search_v_quant
from dllm_actquant.linear import ActQuantLinear
from dllm_actquant.metrics import channel_spread, outlier_ratio, range_imbalance
from dllm_actquant.modules import linear_targets, unwrap
from dllm_actquant.quarot import QuaRotConfig, QuaRotResult, apply_quarot, check_quarot_sizes
from dllm_actquant.rotation import (
    BlockRotation,
    HadamardRotation,
    InputRotation,
    OnlineHadamard,
    OnlineRotation,
    fold_rotation,
)
from dllm_actquant.smoothquant import SmoothQuantConfig, apply_smoothquant, smoothquant_scales
from dllm_actquant.vquant import (
    VQuantConfig,
    VQuantHandle,
    VQuantParams,
    attach_v_quantizers,
    fake_quantize_v,
)

__all__ = [
    "DUQUANT_SITES",
    "QUANTIZED_ATTR",
    "ActQuantConfig",
    "ActQuantLinear",
    "BlockRotation",
    "CapturedInputs",
    "DuQuantConfig",
    "DuQuantResult",
    "HadamardRotation",
    "IAAQAccumulator",
    "IAAQConfig",
    "IAAQResult",
    "InputRotation",
    "OnlineHadamard",
    "OnlineRotation",
    "QuaRotConfig",
    "QuaRotResult",
    "SmoothQuantConfig",
    "StaticActParams",
    "TransformError",
    "VQuantConfig",
    "VQuantHandle",
    "VQuantParams",
    "apply_duquant",
    "apply_quarot",
    "apply_smoothquant",
    "attach_v_quantizers",
    "calibrate_iaaq",
    "capture_inputs",
    "channel_spread",
    "check_hadamard_size",
    "check_quarot_sizes",
    "duquant_rotation",
    "effective_block_size",
    "fake_quantize_activation",
    "fake_quantize_v",
    "fold_rotation",
    "greedy_block_rotation",
    "is_quantized",
    "linear_targets",
    "mark_quantized",
    "outlier_ratio",
    "quantize_activation",
    "quantize_activations",
    "random_hadamard",
    "range_imbalance",
    "search_v_quant",
    "smoothquant_scales",
    "unwrap",
    "zigzag_permutation",
]
