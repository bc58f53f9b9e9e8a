"""dllm_actquant: activation quantization and equivalence transforms for dLLMs (LLaDA, Dream).

* Quantizers: `ActQuantConfig` (dynamic per-token or static per-tensor, int8/int4, symmetric or not, clip),
  `ActQuantLinear` (fake-quantized, or real ``dllm_kernels`` int8 / W4A8 / W4A4 GEMMs),
  `quantize_activations` to wrap a model; V quantization (`VQuantConfig`, `attach_v_quantizers`).
* Transforms (float-model invariant, folded through ``dllm_sampler.Topology``): `apply_smoothquant`,
  `apply_quarot` (R1, R2, online R4 via `OnlineHadamard`), `apply_duquant`; IA-AQ (`calibrate_iaaq`).
* Run-time wrappers as data: `stripped_wrappers` / `restore_wrappers` (what a weight checkpoint cannot
  express: online rotations, activation and V quantizers).
* Pipeline steps: every method is registered in ``dllm_calib``'s method registry by
  :mod:`dllm_actquant.methods` (`float_block_inputs` collects the float inputs the global transforms read).
* Helpers: `capture_inputs` (samples and absmax on token batches), metrics (`outlier_ratio`,
  `channel_spread`, `range_imbalance`), quantization markers.
"""

from dllm_actquant.act_quant import (
    ActQuantConfig,
    StaticActParams,
    fake_quantize_activation,
    quantize_activation,
)
from dllm_actquant.apply import quantize_activations
from dllm_actquant.attention import (
    ATTENTION_SITES,
    AttnQuantConfig,
    QKHadamard,
    QKQuant,
    attach_attention_quantizers,
    attention_site_summary,
    fake_quantize_heads,
    rotate_qk,
)
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
from dllm_actquant.iaaq import (
    IAAQAccumulator,
    IAAQConfig,
    IAAQResult,
    VOutputCollector,
    calibrate_iaaq,
    search_v_quant,
)
from dllm_actquant.linear import ActQuantLinear
from dllm_actquant.methods import DUQUANT_SAMPLE_TOKENS, READER_ROLES, float_block_inputs
from dllm_actquant.metrics import channel_spread, outlier_ratio, range_imbalance
from dllm_actquant.quarot import (
    QuaRotConfig,
    QuaRotResult,
    apply_quarot,
    check_quarot_sizes,
    head_mixing_matrix,
    quarot_wrapped_roles,
)
from dllm_actquant.rotation import (
    BlockRotation,
    HadamardRotation,
    HeadRotation,
    InputRotation,
    OnlineHadamard,
    OnlineRotation,
    fold_rotation,
)
from dllm_actquant.runtime import (
    RUNTIME_FORMAT,
    RuntimeState,
    restore_wrappers,
    strip_wrappers,
    stripped_wrappers,
)
from dllm_actquant.smoothquant import (
    SMOOTH_PAIRS,
    SmoothQuantConfig,
    apply_smoothquant,
    pair_scales,
    smoothquant_scales,
)
from dllm_actquant.vquant import (
    VQuantConfig,
    VQuantHandle,
    VQuantOutput,
    VQuantParams,
    attach_v_quantizers,
    fake_quantize_v,
)

__all__ = [
    "ATTENTION_SITES",
    "DUQUANT_SAMPLE_TOKENS",
    "DUQUANT_SITES",
    "QUANTIZED_ATTR",
    "READER_ROLES",
    "RUNTIME_FORMAT",
    "SMOOTH_PAIRS",
    "ActQuantConfig",
    "ActQuantLinear",
    "AttnQuantConfig",
    "BlockRotation",
    "CapturedInputs",
    "DuQuantConfig",
    "DuQuantResult",
    "HadamardRotation",
    "HeadRotation",
    "IAAQAccumulator",
    "IAAQConfig",
    "IAAQResult",
    "InputRotation",
    "OnlineHadamard",
    "OnlineRotation",
    "QKHadamard",
    "QKQuant",
    "QuaRotConfig",
    "QuaRotResult",
    "RuntimeState",
    "SmoothQuantConfig",
    "StaticActParams",
    "TransformError",
    "VOutputCollector",
    "VQuantConfig",
    "VQuantHandle",
    "VQuantOutput",
    "VQuantParams",
    "apply_duquant",
    "apply_quarot",
    "apply_smoothquant",
    "attach_attention_quantizers",
    "attach_v_quantizers",
    "attention_site_summary",
    "calibrate_iaaq",
    "capture_inputs",
    "channel_spread",
    "check_hadamard_size",
    "check_quarot_sizes",
    "duquant_rotation",
    "effective_block_size",
    "fake_quantize_activation",
    "fake_quantize_heads",
    "fake_quantize_v",
    "float_block_inputs",
    "fold_rotation",
    "greedy_block_rotation",
    "head_mixing_matrix",
    "is_quantized",
    "mark_quantized",
    "outlier_ratio",
    "pair_scales",
    "quantize_activation",
    "quantize_activations",
    "quarot_wrapped_roles",
    "random_hadamard",
    "range_imbalance",
    "restore_wrappers",
    "rotate_qk",
    "search_v_quant",
    "smoothquant_scales",
    "strip_wrappers",
    "stripped_wrappers",
    "zigzag_permutation",
]
