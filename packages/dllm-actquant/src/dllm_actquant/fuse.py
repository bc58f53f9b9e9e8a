"""One activation quantization and one set of integer GEMMs for W8A8 / W4A8 layers that read the same input.

In a checkpoint whose activations are quantized per token, q/k/v (and gate/up) are `ActQuantLinear`s
around packed layers. Run one by one, each quantizes the same input again and runs its own integer GEMMs.
`SharedInputIntGEMM` quantizes the input once, in the launch that unpacks the members' codes stacked into
one tile, and multiplies them (`dllm_kernels.cpu.ops.WeightStack.quantized_int_matmul`) with the members'
own epilogue: the numbers are those of the members' own forwards, bit for bit. `fuse_act_quant_inputs`
attaches it to the first layer of each group of `dllm_sampler.models.spec.shared_input_groups` (attribute
``shared_input_gemm``, which `dllm_sampler.models.layers.linears_on` uses).
"""

from __future__ import annotations

from dllm_kernels.cpu.ops import WeightStack
from dllm_kernels.dispatch import fast_cpu_gemms
from dllm_sampler.models.layers import ConcatenatedBias, runner_applies
from dllm_sampler.models.spec import attach_shared_input_runners
from torch import Tensor, nn

from dllm_actquant.linear import ActQuantLinear, finish_integer_gemm
from dllm_actquant.vquant import VQuantOutput

__all__ = ["SharedInputIntGEMM", "fuse_act_quant_inputs"]


def _integer_layer(layer: nn.Module) -> nn.Module:
    """The `ActQuantLinear` a group member computes through: the member, or the layer a `VQuantOutput`
    (a v projection whose output is quantized) wraps."""
    return layer.inner if isinstance(layer, VQuantOutput) else layer


class SharedInputIntGEMM:
    """Runs ``layers`` (kernel-mode `ActQuantLinear`s around packed inner layers, with one dynamic
    activation config, one ``in_features`` and one weight group size; a member may be a `VQuantOutput`
    around such a layer, whose quantizer is then applied to its block of the output) as one quantization
    and one stacked integer GEMM: ``runner(h [..., K], linears) -> (y_1 [..., N_1], ...)`` in ``h``'s dtype,
    or None when it cannot serve the call (other layers, hooks, not on the CPU, fast CPU GEMMs off)."""

    def __init__(self, layers: tuple[nn.Module, ...]) -> None:
        if len(layers) < 2:
            raise ValueError(f"a shared-input group needs at least two layers, got {len(layers)}")
        linears = tuple(_integer_layer(layer) for layer in layers)
        for layer in linears:
            if not (isinstance(layer, ActQuantLinear) and layer.mode == "kernel" and layer.packed_inner):
                raise ValueError(f"only kernel-mode ActQuantLinears around packed layers fuse, got {layer!r}")
            if not layer.config.dynamic or layer.config != linears[0].config:
                raise ValueError("fused layers need one dynamic activation config")
            if (layer.in_features, layer.inner.spec.group_size) != (
                linears[0].in_features,
                linears[0].inner.spec.group_size,
            ):
                raise ValueError("fused layers need one in_features and one weight group size")
        self.layers = layers
        self.linears: tuple[ActQuantLinear, ...] = linears  # type: ignore[assignment]
        self.splits = [m.out_features for m in linears]
        self._weights: WeightStack | None = None
        self._bias = ConcatenatedBias()

    def _serves(self, h: Tensor, linears: tuple[nn.Module, ...]) -> bool:
        watched = [*self.layers, *self.linears, *(m.inner for m in self.linears)]
        return fast_cpu_gemms() and runner_applies(h, linears, self.layers, watched)

    def _stack(self) -> WeightStack:
        """The members' prepared weights as one stack, rebuilt when a member prepared its weight anew."""
        self._weights = WeightStack.refreshed(self._weights, [m.inner.cpu_weight() for m in self.linears])
        return self._weights

    def __call__(self, h: Tensor, linears: tuple[nn.Module, ...]) -> tuple[Tensor, ...] | None:
        if not self._serves(h, linears):
            return None
        cfg = self.linears[0].config
        stack = self._stack()
        y, scale, zero = stack.quantized_int_matmul(
            h.reshape(-1, h.shape[-1]), cfg.bits, cfg.symmetric, cfg.clip_ratio
        )
        bias = self._bias([m.inner.bias for m in self.linears], self.splits)
        zero = None if zero is None else zero.float()
        y = finish_integer_gemm(y, scale, zero, lambda: stack.column_term, bias, h.dtype)
        outs = y.view(*h.shape[:-1], y.shape[-1]).split(self.splits, dim=-1)
        return tuple(
            layer.quantize_output(out) if isinstance(layer, VQuantOutput) else out
            for layer, out in zip(self.layers, outs, strict=True)
        )

    def __repr__(self) -> str:
        return f"SharedInputIntGEMM(out_features={self.splits})"


def fuse_act_quant_inputs(model: nn.Module) -> int:
    """Attach a `SharedInputIntGEMM` to every group of `dllm_sampler.models.spec.shared_input_groups` that
    qualifies (see the class); other groups are left as they are. Returns how many groups were fused.
    Idempotent."""
    return attach_shared_input_runners(model, SharedInputIntGEMM)
