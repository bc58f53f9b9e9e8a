"""Quantization of the attention value matrix V (the output of v_proj), as a wrapper around v_proj.

``V`` is viewed as ``[..., K, Dh]`` (K key/value heads of Dh channels). Granularities:

* ``"head"``: static, one (scale, zero) per kv head from the calibrated range ``[lo_k, hi_k]``;
* ``"channel"``: static, one per (kv head, channel) from ``[lo_kd, hi_kd]``;
* ``"token"``: dynamic, one per (token, kv head) row of Dh values, from the row's own min/max;
* ``"row"``: dynamic, one per token over all ``K * Dh`` values (QuaRot's ``v_groupsize=-1``); the clip
  factor must then be the same for every head.

Each kv head ``k`` has a clip factor ``alpha_k`` (searched by IA-AQ, `calibrate_iaaq`): the range used is
``alpha_k * [lo, hi]``, i.e. the scale is ``alpha_k`` times the min-max scale and the zero point is
unchanged. The grid is dllm_kernels' (``dllm_kernels.torch_grid``, with ``alpha`` as its clip ratio).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import dllm_kernels
import torch
from dllm_calib import MethodConfig
from dllm_kernels import torch_grid
from dllm_sampler import DiffusionLM, Topology
from torch import Tensor, nn

from dllm_actquant.guards import mark_quantized
from dllm_actquant.modules import as_topology, replace_module

__all__ = [
    "VQuantConfig",
    "VQuantHandle",
    "VQuantOutput",
    "VQuantParams",
    "attach_v_quantizers",
    "fake_quantize_v",
]

V_BITS = (2, 3, 4, 8)
_MARK = "v-output"


@dataclass(frozen=True)
class VQuantConfig(MethodConfig):
    """How V is quantized.

    Attributes:
        bits: 2, 3, 4 or 8.
        symmetric: signed codes without zero point; the default asymmetric min-max grid is IA-AQ's.
        granularity: ``"head"`` (static per kv head), ``"channel"`` (static per kv head and channel),
            ``"token"`` (dynamic per token and kv head) or ``"row"`` (dynamic per token, all heads).
    """

    bits: int = 8
    symmetric: bool = False
    granularity: Literal["head", "channel", "token", "row"] = "head"

    def validate(self) -> None:
        if isinstance(self.bits, bool) or self.bits not in V_BITS:
            raise ValueError(f"VQuantConfig.bits must be one of {V_BITS}, got {self.bits!r}")
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"VQuantConfig.symmetric must be a bool, got {self.symmetric!r}")
        if self.granularity not in ("head", "channel", "token", "row"):
            raise ValueError(
                "VQuantConfig.granularity must be 'head', 'channel', 'token' or 'row', "
                f"got {self.granularity!r}"
            )

    @property
    def static(self) -> bool:
        """True when the ranges come from calibration (head, channel)."""
        return self.granularity in ("head", "channel")


@dataclass
class VQuantParams:
    """One layer's V quantizer.

    Attributes:
        alpha: ``[K]`` clip factor per kv head (in (0, 1]).
        lo, hi: calibrated ranges, ``[K]`` (head) or ``[K, Dh]`` (channel); None for ``"token"``.
    """

    alpha: Tensor
    lo: Tensor | None = None
    hi: Tensor | None = None

    def single_clip(self) -> float | None:
        """The clip factor when every kv head has the same one, else None."""
        alpha = self.alpha.tolist()
        return alpha[0] if alpha and all(a == alpha[0] for a in alpha) else None

    def check(self, config: VQuantConfig, num_kv_heads: int, head_dim: int) -> None:
        """Raise ``ValueError`` if the shapes do not fit ``config`` and the layer."""
        if self.alpha.shape != (num_kv_heads,):
            raise ValueError(
                f"VQuantParams.alpha must have shape ({num_kv_heads},), got {tuple(self.alpha.shape)}"
            )
        # a few scalars: checked as Python floats, which costs far less per call than torch reductions
        alpha = self.alpha.tolist()
        if not all(0 < a <= 1 for a in alpha):
            raise ValueError("VQuantParams.alpha entries must be in (0, 1]")
        if config.granularity == "row" and self.single_clip() is None:
            raise ValueError(
                "'row' V quantization has one range per token, so alpha must be equal for all heads"
            )
        if not config.static:
            return
        want = (num_kv_heads,) if config.granularity == "head" else (num_kv_heads, head_dim)
        for name in ("lo", "hi"):
            t = getattr(self, name)
            if t is None or tuple(t.shape) != want:
                got = None if t is None else tuple(t.shape)
                raise ValueError(
                    f"{config.granularity!r} V quantization needs VQuantParams.{name} of shape {want}, "
                    f"got {got}"
                )


def fake_quantize_v(v: Tensor, params: VQuantParams, config: VQuantConfig, num_kv_heads: int) -> Tensor:
    """Quantize-dequantize the v-projection output ``v [..., K * Dh]`` per ``config`` (same shape, dtype)."""
    shape = v.shape
    if shape[-1] % num_kv_heads:
        raise ValueError(f"V width {shape[-1]} is not a multiple of {num_kv_heads} kv heads")
    head_dim = shape[-1] // num_kv_heads
    x = v.reshape(*shape[:-1], num_kv_heads, head_dim)
    params.check(config, num_kv_heads, head_dim)
    clip = params.single_clip() if config.granularity in ("token", "row") else None
    if clip is not None:
        # one clip factor: plain dynamic per-token quantization of rows of Dh (token) or K * Dh (row) values
        rows = x.reshape(-1, head_dim) if config.granularity == "token" else v.reshape(-1, shape[-1])
        rows = rows.contiguous()  # v may be a column block of a fused q/k/v output
        out = dllm_kernels.fake_quantize_per_token(rows, config.bits, config.symmetric, clip)
        return out.to(v.dtype).reshape(shape)
    alpha = params.alpha.to(device=v.device, dtype=torch.float32)[:, None]
    if config.granularity == "row":
        x = v.reshape(*shape[:-1], 1, shape[-1])
        alpha = alpha[:1]
    if config.granularity in ("token", "row"):
        lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    else:
        assert params.lo is not None and params.hi is not None  # params.check requires them
        lo, hi = params.lo.to(v.device), params.hi.to(v.device)
        if config.granularity == "head":
            lo, hi = lo[:, None], hi[:, None]
    scale, zero = torch_grid.scale_zero(lo, hi, config.bits, config.symmetric, alpha)
    out = torch_grid.decode(torch_grid.encode(x, scale, zero, config.bits), scale, zero)
    return out.to(v.dtype).reshape(shape)


class VQuantOutput(nn.Module):
    """``inner`` (a v projection, possibly wrapped) whose output V is fake-quantized (`fake_quantize_v`).

    ``params`` is kept as given (CPU tensors in their own dtype, moved to V's device at each call), so a
    dtype cast of the model never rounds the calibrated ranges. ``inner`` keeps the layer, so
    ``dllm_sampler.weight_holder`` finds its weight through this wrapper. Marked ``"v-output"``, so
    equivalence transforms refuse to edit v while its quantizer is calibrated to it.
    """

    def __init__(
        self, inner: nn.Module, config: VQuantConfig, params: VQuantParams, num_kv_heads: int
    ) -> None:
        super().__init__()
        self.inner = inner
        self.config = config
        self.num_kv_heads = num_kv_heads
        self.params = params
        mark_quantized(self, _MARK)

    def forward(self, x: Tensor) -> Tensor:
        return self.quantize_output(self.inner(x))

    def quantize_output(self, v: Tensor) -> Tensor:
        """``inner``'s output ``v [..., K * Dh]`` fake-quantized: what `forward` applies, and what a fused
        q/k/v runner applies to its v block."""
        return fake_quantize_v(v, self.params, self.config, self.num_kv_heads)

    def extra_repr(self) -> str:
        c = self.config
        return f"bits={c.bits}, symmetric={c.symmetric}, granularity={c.granularity!r}"


class VQuantHandle:
    """The wrappers of `attach_v_quantizers`; ``remove()`` takes them off again (also a context manager)."""

    def __init__(self, root: nn.Module, wrapped: dict[str, VQuantOutput]) -> None:
        self._root, self._wrapped = root, wrapped

    def remove(self) -> None:
        for name, wrapper in self._wrapped.items():
            replace_module(self._root, name, wrapper.inner)
        self._wrapped = {}

    def __enter__(self) -> VQuantHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def attach_v_quantizers(
    model: DiffusionLM | Topology | nn.Module,
    config: VQuantConfig,
    params: Mapping[int, VQuantParams] | None = None,
) -> VQuantHandle:
    """Fake-quantize every block's V: wrap the v projection in a `VQuantOutput`.

    ``params`` maps block index -> `VQuantParams` (from `calibrate_iaaq`); blocks without an entry are left
    alone. For ``"token"`` granularity ``params=None`` quantizes every block with ``alpha = 1``. Every
    parameter is checked before the first module is wrapped.
    """
    topology = as_topology(model)
    if params is None:
        if config.static:
            raise ValueError(
                f"{config.granularity!r} V quantization is static and needs calibrated params "
                "(calibrate_iaaq)"
            )
        params = {b.index: VQuantParams(alpha=torch.ones(b.n_kv_heads)) for b in topology}
    unknown = set(params) - {b.index for b in topology}
    if unknown:
        raise ValueError(f"V quantizer params for unknown blocks {sorted(unknown)}")
    chosen = [b for b in topology if b.index in params]
    for b in chosen:
        params[b.index].check(config, b.n_kv_heads, b.head_dim)
    wrapped: dict[str, VQuantOutput] = {}
    for b in chosen:
        name = b.names["v"]
        wrapped[name] = VQuantOutput(b.module("v"), config, params[b.index], b.n_kv_heads)
        replace_module(topology.model, name, wrapped[name])
    return VQuantHandle(topology.model, wrapped)
