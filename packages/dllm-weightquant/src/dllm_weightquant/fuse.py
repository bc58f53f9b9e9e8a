"""One GEMM for quantized layers that read the same input (q/k/v, gate/up) on the CPU.

A block's q, k and v projections (and its gate and up projections) multiply the same activations. Run one
by one, each packed layer converts the input, launches its own unpacking and its own small GEMM. Grouped,
the input is converted once, every member's weight is unpacked into its rows of one tile and a single
GEMM computes all outputs (`dllm_kernels.cpu.ops.WeightStack`): at the tiny models' shapes the fixed
cost per call is as large as the arithmetic, so this is where the packed model gains its speed.

`fuse_shared_inputs` attaches a `SharedInputGEMM` to the first layer of each group (attribute
``shared_input_gemm``); the model code calls groups through `dllm_sampler.models.layers.linears_on`, which
uses the runner when there is one. Nothing is copied: the runner holds references to its layers and asks
each for its prepared CPU weight on every call, so moving or re-quantizing a layer is seen at once. The
outputs are the members' own numbers (the same dequantized weights, the same GEMM precision, bias added
in float32 and cast to the input's dtype as `QuantLinear` does).
"""

from __future__ import annotations

from dllm_kernels.cpu.ops import WeightStack
from dllm_kernels.dispatch import fast_cpu_gemms
from dllm_sampler.models.layers import ConcatenatedBias, add_bias, runner_applies
from dllm_sampler.models.spec import attach_shared_input_runners
from torch import Tensor, nn

from dllm_weightquant.qlinear import QuantLinear

__all__ = ["SharedInputGEMM", "fuse_shared_inputs"]


class SharedInputGEMM:
    """Runs ``layers`` (kernel-mode `QuantLinear`s with the same ``in_features`` and no input permutation)
    as one GEMM: ``runner(h [..., K], linears) -> (y_1 [..., N_1], y_2, ...)``, or None when it cannot serve
    the call (``linears`` are not its layers, a layer has forward hooks, the input is not on the CPU, the
    fast CPU GEMMs are off, or the layers' GEMM precisions differ); the caller then runs the layers one by
    one."""

    def __init__(self, layers: tuple[QuantLinear, ...]) -> None:
        if len(layers) < 2:
            raise ValueError(f"a shared-input group needs at least two layers, got {len(layers)}")
        for layer in layers:
            if not isinstance(layer, QuantLinear) or layer.mode != "kernel" or layer.spec is None:
                raise ValueError(f"only kernel-mode uniform QuantLinears share a GEMM, got {layer!r}")
            if layer.kernel_perm is not None:
                raise ValueError(f"act-order layers (a kernel_perm) run alone: {layer!r}")
            if layer.in_features != layers[0].in_features:
                raise ValueError(
                    f"shared-input layers must have one in_features, got {[m.in_features for m in layers]}"
                )
        self.layers = layers
        self.splits = [m.out_features for m in layers]
        self._weights: WeightStack | None = None
        self._bias = ConcatenatedBias()

    def _serves(self, h: Tensor, linears: tuple[nn.Module, ...]) -> bool:
        return fast_cpu_gemms() and runner_applies(h, linears, self.layers, self.layers)

    def _stack(self) -> WeightStack:
        """The members' prepared weights as one stack, rebuilt when a member prepared its weight anew (it
        moved or was re-quantized)."""
        self._weights = WeightStack.refreshed(self._weights, [m.prepared_cpu_weight() for m in self.layers])
        return self._weights

    def __call__(self, h: Tensor, linears: tuple[nn.Module, ...]) -> tuple[Tensor, ...] | None:
        if not self._serves(h, linears):
            return None
        first = self.layers[0]
        k = first.in_features
        if h.shape[-1] != k:
            raise ValueError(f"QuantLinear expects inputs [..., {k}], got {list(h.shape)}")
        if any(m.compute_dtype is not first.compute_dtype for m in self.layers):
            return None  # the members' GEMM precisions differ
        bias = self._bias([m.bias for m in self.layers], self.splits)
        y = add_bias(self._stack().matmul(h.reshape(-1, k), first.gemm_dtype(h)), bias, h.dtype)
        return y.view(*h.shape[:-1], y.shape[-1]).split(self.splits, dim=-1)

    def __repr__(self) -> str:
        return f"SharedInputGEMM(out_features={self.splits})"


def fuse_shared_inputs(model: nn.Module) -> int:
    """Attach a `SharedInputGEMM` to every group of `dllm_sampler.models.spec.shared_input_groups` whose
    layers are all kernel-mode uniform `QuantLinear`s with the same in_features and no act-order
    permutation (other groups are left as they are); returns how many groups were fused. Idempotent."""
    return attach_shared_input_runners(model, SharedInputGEMM)
