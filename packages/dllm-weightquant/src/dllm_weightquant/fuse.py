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

The routed experts of a mixture-of-experts layer each read their own tokens, so they cannot share a GEMM,
but they can share the dequantization: `fuse_experts` attaches an `ExpertsGEMM` to each layer's experts
(attribute ``experts_gemm`` of the list, called by `dllm_sampler.models.layers.experts_on`), which
unpacks the weights of a run of experts in one launch instead of two launches per expert.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from dllm_kernels.cpu.ops import TILE_BYTES, WeightStack, tile_matmul
from dllm_kernels.dispatch import fast_cpu_gemms
from dllm_sampler.models.layers import ConcatenatedBias, add_bias, hooked, runner_applies, swiglu
from dllm_sampler.models.spec import attach_experts_runners, attach_shared_input_runners
from torch import Tensor, nn

from dllm_weightquant.qlinear import QuantLinear

__all__ = ["ExpertsGEMM", "SharedInputGEMM", "fuse_experts", "fuse_shared_inputs"]


def _check_fusable(layer: nn.Module) -> None:
    """Raises ``ValueError`` unless ``layer`` is a kernel-mode uniform `QuantLinear` without an input
    permutation: what the fused runners of this module can serve (others run alone)."""
    if not isinstance(layer, QuantLinear) or layer.mode != "kernel" or layer.spec is None:
        raise ValueError(f"only kernel-mode uniform QuantLinears run fused, got {layer!r}")
    if layer.kernel_perm is not None:
        raise ValueError(f"act-order layers (a kernel_perm) run alone: {layer!r}")


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
            _check_fusable(layer)
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


class ExpertsGEMM:
    """Runs the routed experts of one mixture-of-experts layer, gated MLPs ``down(silu(gate(x)) * up(x))`` of
    kernel-mode uniform `QuantLinear`s without biases or input permutations, all experts of one shape:
    ``runner(xs, ids) -> [y_i [M_i, D]]`` for the tokens ``xs[i] [M_i, D]`` of experts ``ids`` (ascending),
    or None when it cannot serve the call (a hook on an expert or one of its linears, an input off the CPU,
    the fast CPU GEMMs off, the linears' GEMM precisions differ); the caller then runs the experts one by one.

    Per run of consecutive experts that fits one tile of `dllm_kernels.cpu.ops.TILE_BYTES`, one launch
    dequantizes their gate and up weights and one their down weights (one by one, each expert launches two),
    and each expert multiplies its tokens by its rows of the tile: the members' own numbers, bit for bit
    (the same tiles, the same GEMM per expert, the same casts)."""

    def __init__(self, experts: nn.ModuleList, roles: tuple[tuple[str, str, str], ...]) -> None:
        self.paths = tuple(tuple(tuple(name.split(".")) for name in names) for names in roles)
        self.experts = experts
        linears = self._current(range(len(roles)))
        layers = [m for triple in linears for m in triple]
        for layer in layers:
            _check_fusable(layer)
            if layer.bias is not None:
                raise ValueError(f"experts with biases run one by one: {layer!r}")
        gate = linears[0][0]
        self.hidden, self.width = gate.in_features, gate.out_features
        shape = ((self.width, self.hidden),) * 2 + ((self.hidden, self.width),)
        if any(tuple((m.out_features, m.in_features) for m in triple) != shape for triple in linears):
            raise ValueError("the experts of one layer must share their shapes")
        if 2 * self.width * self.hidden * 4 > TILE_BYTES:
            raise ValueError("an expert larger than one tile runs one by one (its layers tile their weights)")
        self.linears = linears
        self.watched = (*experts, *layers)
        self._gate_up: WeightStack | None = None
        self._down: WeightStack | None = None

    def _current(self, ids: Sequence[int]) -> list[tuple[nn.Module, ...]]:
        """The (gate, up, down) modules experts ``ids`` hold now (a loader may have replaced a linear since,
        e.g. wrapped it in an input quantizer)."""
        found = []
        for e in ids:
            triple = []
            for path in self.paths[e]:
                module: nn.Module = self.experts
                for part in path:
                    module = module._modules[part]  # type: ignore[assignment]
                triple.append(module)
            found.append(tuple(triple))
        return found

    def _stacks(self) -> tuple[WeightStack, WeightStack]:
        """Every expert's gate and up rows, and every expert's down rows, as two stacks (rebuilt when a
        member prepared its weight anew)."""
        gate_up = [m.prepared_cpu_weight() for gate, up, _ in self.linears for m in (gate, up)]
        self._gate_up = WeightStack.refreshed(self._gate_up, gate_up)
        down = [m.prepared_cpu_weight() for _, _, m in self.linears]
        self._down = WeightStack.refreshed(self._down, down)
        return self._gate_up, self._down

    def _runs(self, ids: Sequence[int], itemsize: int) -> list[list[int]]:
        """``ids`` cut into runs of consecutive experts whose gate and up rows fit one tile."""
        most = max(1, TILE_BYTES // (2 * self.width * self.hidden * itemsize))
        runs: list[list[int]] = []
        for e in ids:
            if runs and e == runs[-1][-1] + 1 and len(runs[-1]) < most:
                runs[-1].append(e)
            else:
                runs.append([e])
        return runs

    def __call__(self, xs: Sequence[Tensor], ids: Sequence[int]) -> list[Tensor] | None:
        if not fast_cpu_gemms() or hooked(self.watched) or any(x.device.type != "cpu" for x in xs):
            return None
        if any(now != self.linears[e] for e, now in zip(ids, self._current(ids), strict=True)):
            return None  # a linear was replaced after the runner was attached
        first = self.linears[0][0]
        if any(m.compute_dtype is not first.compute_dtype for triple in self.linears for m in triple):
            return None
        if not xs:
            return []
        dtype = first.gemm_dtype(xs[0])
        gate_up, down = self._stacks()
        width, hidden = self.width, self.hidden
        where = dict(zip(ids, xs, strict=True))
        outs: list[Tensor] = []
        for run in self._runs(ids, 2 if dtype == torch.bfloat16 else 4):
            e0 = run[0]
            tile = gate_up.dequantized(2 * width * e0, 2 * width * len(run), dtype)
            acts = []
            for e in run:
                x = where[e]
                rows = tile[2 * width * (e - e0) : 2 * width * (e - e0 + 1)]
                g, u = add_bias(tile_matmul(x.to(dtype), rows), None, x.dtype).split(width, dim=-1)
                acts.append(swiglu(g, u))
            tile = down.dequantized(hidden * e0, hidden * len(run), dtype)
            for e, a in zip(run, acts, strict=True):
                rows = tile[hidden * (e - e0) : hidden * (e - e0 + 1)]
                outs.append(add_bias(tile_matmul(a.to(dtype), rows), None, a.dtype))
        return outs

    def __repr__(self) -> str:
        return f"ExpertsGEMM(experts={len(self.linears)}, hidden={self.hidden}, width={self.width})"


def fuse_shared_inputs(model: nn.Module) -> int:
    """Attach a `SharedInputGEMM` to every group of `dllm_sampler.models.spec.shared_input_groups` whose
    layers are all kernel-mode uniform `QuantLinear`s with the same in_features and no act-order
    permutation (other groups are left as they are); returns how many groups were fused. Idempotent."""
    return attach_shared_input_runners(model, SharedInputGEMM)


def fuse_experts(model: nn.Module) -> int:
    """Attach an `ExpertsGEMM` to the routed experts of every mixture-of-experts layer of ``model`` whose
    experts are all kernel-mode uniform `QuantLinear`s of one shape without biases (other layers are left as
    they are); returns how many layers got one. Idempotent; a no-op for dense models."""
    return attach_experts_runners(model, ExpertsGEMM)
