"""RTN: round-to-nearest on the min/max grid, optionally shrunk by a fixed ratio or a per-group MSE search."""

from __future__ import annotations

from dataclasses import dataclass

import dllm_kernels
import torch
from dllm_calib import MethodConfig, check_range
from dllm_kernels import GGUFSpec, QuantSpec, torch_grid
from torch import Tensor

from dllm_weightquant._checks import check_uniform_spec, check_weight
from dllm_weightquant.gguf.quantize import gguf_rtn, gguf_spec_for
from dllm_weightquant.gguf.weight import GGUFWeight
from dllm_weightquant.grid import ClipSearch, search_params
from dllm_weightquant.qweight import QuantizedWeight

__all__ = ["RTNConfig", "fake_quantize_weight", "rtn_quantize", "weight_cells"]


@dataclass(frozen=True)
class RTNConfig(MethodConfig):
    """Round-to-nearest.

    Attributes:
        clip: None for plain min/max scales (exactly ``dllm_kernels.quantize``), or a ``ClipSearch`` that
            shrinks each group's range to minimise its own quantization error.
        clip_ratio: a fixed range shrink in (0, 1] (DuQuant's ``--swc``): each cell's min and max are
            multiplied by it before the scale/zero formula; 1.0 is plain min/max. Not with ``clip``.
    """

    clip: ClipSearch | None = None
    clip_ratio: float = 1.0

    def validate(self) -> None:
        check_range("RTNConfig", "clip_ratio", self.clip_ratio, 0.0, 1.0, lo_open=True)
        if self.clip is not None and self.clip_ratio != 1.0:
            raise ValueError(
                "RTNConfig: clip (an MSE search over shrink ratios) and clip_ratio (one fixed ratio) are "
                f"mutually exclusive; got clip={self.clip!r} and clip_ratio={self.clip_ratio!r}; set one"
            )


def weight_cells(weight: Tensor, spec: QuantSpec) -> Tensor:
    """View ``weight [out, in]`` as scale cells ``[rows, cells, n]``: one cell per (row, group).

    ``tensor`` -> ``[1, 1, out*in]``; ``channel`` -> ``[out, 1, in]``; ``group`` -> ``[out, in/G, G]``.
    """
    out, inp = weight.shape
    if spec.granularity == "tensor":
        return weight.reshape(1, 1, out * inp)
    if spec.granularity == "group":
        assert spec.group_size is not None
        return weight.reshape(out, inp // spec.group_size, spec.group_size)
    return weight.reshape(out, 1, inp)


def _cell_params(
    cells: Tensor, spec: QuantSpec, clip: ClipSearch | None, ratio: float
) -> tuple[Tensor, Tensor | None]:
    """Scale float32 and signed int32 zero (None if symmetric) ``[rows, cells]`` of the cells
    ``[rows, cells, n]``: the clip search's best, or the min/max range shrunk by ``ratio``."""
    if clip is not None:
        return search_params(cells, spec.bits, spec.symmetric, clip)
    lo, hi = torch.aminmax(cells.float(), dim=-1)
    return torch_grid.scale_zero(lo, hi, spec.bits, spec.symmetric, ratio)


def _grid_quantize(
    weight: Tensor, spec: QuantSpec, clip: ClipSearch | None, ratio: float = 1.0
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Signed grid codes ``[rows, cells, n]`` of ``weight_cells(weight)`` and their scale and zero
    ``[rows, cells, 1]`` (zero None if symmetric)."""
    cells = weight_cells(weight.float(), spec)
    scale, zero = _cell_params(cells, spec, clip, ratio)
    scale, zero = scale[..., None], None if zero is None else zero[..., None]
    return torch_grid.encode(cells, scale, zero, spec.bits), scale, zero


def rtn_quantize(
    weight: Tensor, hessian: Tensor | None, spec: QuantSpec, config: RTNConfig | None = None
) -> QuantizedWeight | GGUFWeight:
    """Round ``weight [out, in]`` to the grid of ``spec``; ``hessian`` is ignored (the common signature).

    Without a clip search or ratio this is ``dllm_kernels.quantize`` (min/max scales, on the weight's
    device); with ``clip_ratio`` r every cell's min and max are multiplied by r; with a search every cell's
    range is shrunk to the ratio with the least error (see ``grid.ClipSearch``). A ``GGUFSpec`` gives a
    ``GGUFWeight`` with llama.cpp's scale rules (no clip). Works on any device; the result lives on the CPU.
    """
    config = config or RTNConfig()
    w = check_weight(weight)
    if isinstance(spec, GGUFSpec):
        if config.clip is not None or config.clip_ratio != 1.0:
            raise ValueError(
                f"RTN on the GGUF grid {spec.gguf_type} uses llama.cpp's scale rule; clip and clip_ratio are "
                "not supported there: drop them from the rtn step"
            )
        return gguf_rtn(w, gguf_spec_for(spec, w.shape[1]))
    spec = check_uniform_spec(spec, w.shape[1], "RTN")
    if config.clip is None and config.clip_ratio == 1.0:
        codes, scale, zero = dllm_kernels.quantize(w, spec)
        return QuantizedWeight.from_codes(codes, scale, zero, spec)
    codes, scale, zero = _grid_quantize(w, spec, config.clip, config.clip_ratio)
    shape = QuantizedWeight.scale_shape(spec, *w.shape)
    codes, scale = codes.reshape(w.shape), scale.reshape(shape)
    if zero is not None:
        codes, zero = torch_grid.to_unsigned(codes, zero.reshape(shape), spec.bits)
    return QuantizedWeight.from_codes(codes, scale, zero, spec)


def fake_quantize_weight(weight: Tensor, spec: QuantSpec, clip: ClipSearch | None = None) -> Tensor:
    """``dequantize(rtn(weight))`` as float32 on the weight's device (the proxy quantizer of AWQ's search);
    on a ``GGUFSpec`` the GGUF grid (``clip`` must be None)."""
    if isinstance(spec, GGUFSpec):
        if clip is not None:
            raise ValueError(f"the GGUF grid {spec.gguf_type} has no clip search; pass clip=None")
        q = gguf_rtn(weight, gguf_spec_for(spec, weight.shape[1]))
        return q.dequantize().to(weight.device)
    return torch_grid.decode(*_grid_quantize(weight, spec, clip)).reshape(weight.shape)
