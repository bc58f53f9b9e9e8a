"""``QuantLinear``: a Linear layer with a quantized weight, plus ``replace_linear``.

Two execution modes:

* ``"kernel"`` (uniform ``QuantizedWeight`` only): ``y = x @ dequant(W)^T`` through ``dllm_kernels``'
  group-wise GEMM (``wna16_gemm``) on the packed codes: the real low-bit computation (the kernels package
  picks the backend; float32 accumulation). Activations enter the GEMM in ``compute_dtype``; the output is
  cast back to the input's dtype. ``compute_dtype=None`` (the default) means bfloat16 on a CPU with native
  bf16 GEMMs (the 16-bit activations of a W*A16 scheme, about twice the float32 speed: the packed layer is
  then faster than the float32 layer it replaces) and float32 elsewhere; ``torch.float32`` gives the exact
  float32 computation everywhere (`set_compute_dtype` sets it on a whole model).
* ``"fake"``: the dequantized float weight (in ``dtype``) with ``F.linear``: the same numbers as a
  fake-quantized model, for accuracy studies; the only mode for ``MultiBinaryWeight`` (no binary GEMM) and
  ``GGUFWeight`` (llama.cpp's blocks; dllmq runs them dequantized).

The quantized tensors are registered as buffers (they move with ``.to()`` and show up in ``state_dict``
under the names of ``FORMAT.md``); the dequantized weight of fake mode is a non-persistent buffer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dllm_kernels
import torch
import torch.nn.functional as F
from dllm_kernels import QuantSpec
from dllm_kernels.cpu import native_bf16
from dllm_kernels.cpu.ops import PackedWeight
from dllm_kernels.dispatch import fast_cpu_gemms
from dllm_sampler.models.layers import add_bias
from torch import Tensor, nn

from dllm_weightquant.gguf.weight import GGUFWeight
from dllm_weightquant.multibinary import MultiBinaryWeight
from dllm_weightquant.qweight import QuantizedWeight

__all__ = ["MODES", "QuantLinear", "replace_linear", "set_compute_dtype"]

MODES = ("kernel", "fake")
QWeight = QuantizedWeight | MultiBinaryWeight | GGUFWeight
# Buffers whose dtype is part of the format: .to(dtype) / .half() move them but never cast them.
_EXACT_BUFFERS = (
    "weight_packed",
    "weight_scale",
    "weight_zero_point",
    "weight_g_idx",
    "weight_planes",
    "weight_alpha_r",
    "weight_alpha_c",
    "weight_orders",
    "weight_gguf",
    "_kernel_packed",
    "_kernel_scale",
    "_kernel_zero",
    "_kernel_perm",
)


class QuantLinear(nn.Module):
    """Linear layer ``y = x W^T + b`` with a quantized ``W``; ``x [..., in] -> y [..., out]``.

    Args:
        qweight: a ``QuantizedWeight``, ``MultiBinaryWeight`` or ``GGUFWeight``.
        bias: optional float ``[out]`` (kept as a parameter, in its own dtype).
        mode: ``"kernel"`` or ``"fake"`` (see the module docstring).
        dtype: dtype of the fake-mode weight (default float32).

    Attributes:
        compute_dtype: kernel mode's GEMM input dtype: None (automatic, see the module docstring),
            ``torch.float32`` or ``torch.bfloat16``.
    """

    compute_dtype: torch.dtype | None = None

    def __init__(
        self,
        qweight: QWeight,
        bias: Tensor | None = None,
        mode: str = "kernel",
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"QuantLinear mode must be one of {MODES}, got {mode!r}")
        if not isinstance(qweight, QuantizedWeight | MultiBinaryWeight | GGUFWeight):
            raise ValueError(
                "qweight must be a QuantizedWeight, MultiBinaryWeight or GGUFWeight, got "
                f"{type(qweight).__name__}"
            )
        if mode == "kernel" and isinstance(qweight, MultiBinaryWeight):
            raise ValueError(
                "multi-binary (DAQ/ABMP) weights have no dllm_kernels GEMM; use QuantLinear(..., mode='fake')"
            )
        if mode == "kernel" and isinstance(qweight, GGUFWeight):
            raise ValueError(
                "GGUF weights run in llama.cpp; dllmq runs them dequantized: use QuantLinear(mode='fake')"
            )
        self.in_features = qweight.in_features
        self.out_features = qweight.out_features
        self.mode = mode
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise ValueError(f"bias must have shape [{self.out_features}], got {list(bias.shape)}")
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self._kind = (
            "uniform"
            if isinstance(qweight, QuantizedWeight)
            else "gguf"
            if isinstance(qweight, GGUFWeight)
            else "multi-binary"
        )
        self._cpu_weight: PackedWeight | None = None  # kernel mode's CPU GEMM operand, made on first use
        self._meta: dict[str, object] = {}
        if isinstance(qweight, GGUFWeight):
            self._meta = {"gguf_type": qweight.gguf_type}
            self.register_buffer("weight_gguf", qweight.data)
        elif isinstance(qweight, QuantizedWeight):
            self._meta = {"spec": qweight.spec}
            self.register_buffer("weight_packed", qweight.packed)
            self.register_buffer("weight_scale", qweight.scale)
            self.register_buffer("weight_zero_point", qweight.zero)
            self.register_buffer("weight_g_idx", qweight.g_idx)
            if mode == "kernel":
                packed, scale, zero, group, perm = qweight.kernel_layout()
                self._meta["kernel_group_size"] = group
                self.register_buffer("_kernel_packed", packed, persistent=False)
                self.register_buffer("_kernel_scale", scale, persistent=False)
                self.register_buffer("_kernel_zero", zero, persistent=False)
                self.register_buffer("_kernel_perm", perm, persistent=False)
        else:
            self._meta = {"group_size": qweight.group_size}
            self.register_buffer("weight_planes", qweight.planes)
            self.register_buffer("weight_alpha_r", qweight.alpha_r)
            self.register_buffer("weight_alpha_c", qweight.alpha_c)
            self.register_buffer("weight_orders", qweight.orders)
        if mode == "fake":
            dense = qweight.dequantize().to(dtype or torch.float32)
            self.register_buffer("weight", dense, persistent=False)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, qweight: QWeight, mode: str = "kernel", dtype: torch.dtype | None = None
    ) -> QuantLinear:
        """Wrap ``qweight`` (the quantized ``linear.weight``) with ``linear``'s bias; the fake-mode weight
        takes ``linear``'s dtype unless ``dtype`` is given."""
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        if (qweight.out_features, qweight.in_features) != (linear.out_features, linear.in_features):
            raise ValueError(
                f"qweight shape {list(qweight.shape)} does not match the linear "
                f"[{linear.out_features}, {linear.in_features}]"
            )
        bias = None if linear.bias is None else linear.bias.detach().cpu()
        module = cls(qweight, bias, mode, dtype or linear.weight.dtype)
        return module.to(linear.weight.device)

    def layout(self) -> dict[str, Any]:
        """What rebuilds this layer together with its ``state_dict`` (`from_layout`), JSON-ready:
        ``kind``, ``shape [out, in]``, ``mode``, ``dtype`` (fake mode's weight dtype, else None) and the
        ``spec`` (uniform) or ``group_size`` (multi-binary)."""
        layout: dict[str, Any] = {
            "kind": self._kind,
            "shape": [self.out_features, self.in_features],
            "mode": self.mode,
            "dtype": str(self.weight.dtype).removeprefix("torch.") if self.mode == "fake" else None,
        }
        if self._kind == "uniform":
            layout["spec"] = self._meta["spec"].to_dict()  # type: ignore[attr-defined]
        elif self._kind == "gguf":
            layout["gguf_type"] = self._meta["gguf_type"]
        else:
            layout["group_size"] = self._meta["group_size"]
        return layout

    @classmethod
    def from_layout(cls, layout: Mapping[str, Any], state: Mapping[str, Tensor]) -> QuantLinear:
        """Inverse of `layout` + ``state_dict``: the same layer, built from ``state`` (this layer's
        ``state_dict`` entries without a prefix)."""
        out, inp = (int(n) for n in layout["shape"])
        if layout["kind"] == "gguf":
            qweight: QWeight = GGUFWeight(state["weight_gguf"], str(layout["gguf_type"]), (out, inp))
        elif layout["kind"] == "uniform":
            qweight = QuantizedWeight(
                packed=state["weight_packed"],
                scale=state["weight_scale"],
                zero=state.get("weight_zero_point"),
                spec=QuantSpec.from_dict(layout["spec"]),
                shape=(out, inp),
                g_idx=state.get("weight_g_idx"),
            )
        else:
            qweight = MultiBinaryWeight(
                planes=state["weight_planes"],
                alpha_r=state["weight_alpha_r"],
                alpha_c=state["weight_alpha_c"],
                orders=state["weight_orders"],
                shape=(out, inp),
                group_size=int(layout["group_size"]),
            )
        dtype = None if layout["dtype"] is None else getattr(torch, layout["dtype"])
        return cls(qweight, state.get("bias"), layout["mode"], dtype)

    @property
    def qweight(self) -> QWeight:
        """The quantized weight rebuilt from the buffers (on the CPU)."""
        if self._kind == "gguf":
            return GGUFWeight(
                self.weight_gguf.cpu(), str(self._meta["gguf_type"]), (self.out_features, self.in_features)
            )
        if self._kind == "uniform":
            zero, g_idx = self.weight_zero_point, self.weight_g_idx
            return QuantizedWeight(
                packed=self.weight_packed.cpu(),
                scale=self.weight_scale.cpu(),
                zero=None if zero is None else zero.cpu(),
                spec=self._meta["spec"],  # type: ignore[arg-type]
                shape=(self.out_features, self.in_features),
                g_idx=None if g_idx is None else g_idx.cpu(),
            )
        return MultiBinaryWeight(
            planes=self.weight_planes.cpu(),
            alpha_r=self.weight_alpha_r.cpu(),
            alpha_c=self.weight_alpha_c.cpu(),
            orders=self.weight_orders.cpu(),
            shape=(self.out_features, self.in_features),
            group_size=int(self._meta["group_size"]),  # type: ignore[call-overload]
        )

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        """Like ``nn.Module._apply``, but the quantized buffers only change device, never dtype."""
        self._cpu_weight = None  # views of the old buffers
        exact = {n: b for n, b in self._buffers.items() if n in _EXACT_BUFFERS and b is not None}
        for n in exact:
            self._buffers[n] = None
        try:
            super()._apply(fn, recurse)
        finally:
            for n, b in exact.items():
                device = fn(torch.empty(0, dtype=b.dtype, device=b.device)).device
                self._buffers[n] = b.to(device)
        return self

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"QuantLinear expects inputs [..., {self.in_features}], got {list(x.shape)}")
        if self.mode == "fake":
            bias = None if self.bias is None else self.bias.to(self.weight.dtype)
            return F.linear(x.to(self.weight.dtype), self.weight, bias).to(x.dtype)
        x2 = x.reshape(-1, self.in_features)
        if self._kernel_perm is not None:
            x2 = x2[:, self._kernel_perm]
        y = add_bias(self._kernel_gemm(x2, self.gemm_dtype(x)), self.bias, x.dtype)
        return y.view(*x.shape[:-1], self.out_features)

    def cpu_weight(self) -> PackedWeight:
        """Kernel mode's weight prepared once for the fast CPU GEMMs (`dllm_kernels.cpu.ops.PackedWeight`:
        float GEMMs, and integer GEMMs for layers whose activations are quantized too); its columns are in
        ``kernel_perm`` order. Raises ``ValueError`` in fake mode or off the CPU."""
        if self.mode != "kernel" or self._kernel_packed.device.type != "cpu":
            raise ValueError(f"cpu_weight needs a kernel-mode QuantLinear on the CPU ({self.extra_repr()})")
        if self._cpu_weight is None:
            group, bits = self._meta["kernel_group_size"], self._meta["spec"].bits  # type: ignore[attr-defined]
            self._cpu_weight = PackedWeight.from_tensors(
                self._kernel_packed, self._kernel_scale, self._kernel_zero, bits, group, self.in_features
            )
        return self._cpu_weight

    def prepared_cpu_weight(self) -> PackedWeight:
        """`cpu_weight` without its checks once it has been prepared (the per-call path of the CPU GEMMs;
        moving the layer drops the prepared weight, so the next call prepares and checks again)."""
        return self._cpu_weight or self.cpu_weight()

    @property
    def spec(self) -> QuantSpec | None:
        """The integer grid of a uniform weight (None for multi-binary and GGUF weights)."""
        return self._meta.get("spec")  # type: ignore[return-value]

    @property
    def kernel_perm(self) -> Tensor | None:
        """Kernel mode's input column order (act-order weights) or None: the GEMM sees x[:, kernel_perm]."""
        return self._buffers.get("_kernel_perm")

    def _kernel_gemm(self, x2: Tensor, dtype: torch.dtype) -> Tensor:
        """``x2 [M, in] @ dequant(W)^T`` -> ``[M, out]`` with the GEMM's input precision ``dtype``: on the
        CPU through the weight prepared once for the fast CPU GEMMs (no per-call validation; float32 ``x2``
        is rounded to bfloat16 inside the dequantization launch; the result in ``dtype``), elsewhere through
        the dispatcher (float32)."""
        if x2.device.type == "cpu" and fast_cpu_gemms():
            return self.prepared_cpu_weight().matmul(x2, dtype)
        group, bits = self._meta["kernel_group_size"], self._meta["spec"].bits  # type: ignore[attr-defined]
        return dllm_kernels.wna16_gemm(
            x2.to(dtype).contiguous(),
            self._kernel_packed,
            self._kernel_scale,
            self._kernel_zero,
            bits,
            group,
            out_dtype=torch.float32,
        )

    def gemm_dtype(self, x: Tensor) -> torch.dtype:
        """Kernel mode's GEMM input dtype for ``x`` (see ``compute_dtype``)."""
        if self.compute_dtype is not None:
            return self.compute_dtype
        if x.device.type == "cpu" and native_bf16():
            return torch.bfloat16
        return torch.float32

    def extra_repr(self) -> str:
        fmt = (
            self._meta["spec"]
            if self._kind == "uniform"
            else f"gguf {self._meta['gguf_type']}"
            if self._kind == "gguf"
            else f"multi-binary group_size={self._meta['group_size']}"
        )
        return f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}, {fmt}"


def set_compute_dtype(model: nn.Module | Any, dtype: torch.dtype | None) -> int:
    """Set ``compute_dtype`` of every kernel-mode `QuantLinear` in ``model`` (an ``nn.Module``, or a
    ``DiffusionLM`` as ``load_any`` returns it) (None: automatic, ``torch.float32``: exact float32 GEMMs,
    ``torch.bfloat16``); returns how many layers were set."""
    if dtype not in (None, torch.float32, torch.bfloat16):
        raise ValueError(f"compute_dtype must be None, torch.float32 or torch.bfloat16, got {dtype!r}")
    module = model if isinstance(model, nn.Module) else getattr(model, "model", None)
    if not isinstance(module, nn.Module):
        raise TypeError(f"set_compute_dtype needs an nn.Module or a DiffusionLM, got {type(model).__name__}")
    layers = [m for m in module.modules() if isinstance(m, QuantLinear) and m.mode == "kernel"]
    for layer in layers:
        layer.compute_dtype = dtype
    return len(layers)


def replace_linear(model: nn.Module, qualified_name: str, module: nn.Module) -> nn.Module:
    """Put ``module`` (e.g. a ``QuantLinear``) at ``qualified_name`` in ``model``; returns the old module.

    The old module must be an ``nn.Linear`` or ``QuantLinear`` with the same in/out features.
    """
    parent_name, _, child = qualified_name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name) if parent_name else model
        old = parent.get_submodule(child)
    except AttributeError as e:
        raise KeyError(f"{qualified_name!r} is not a module of the model") from e
    if not isinstance(old, nn.Linear | QuantLinear):
        raise ValueError(f"{qualified_name!r} is a {type(old).__name__}, not a Linear layer")
    shape = (getattr(module, "in_features", None), getattr(module, "out_features", None))
    if shape != (old.in_features, old.out_features):
        raise ValueError(
            f"replacement for {qualified_name!r} has (in, out) = {shape}, expected "
            f"{(old.in_features, old.out_features)}"
        )
    setattr(parent, child, module)
    return old
