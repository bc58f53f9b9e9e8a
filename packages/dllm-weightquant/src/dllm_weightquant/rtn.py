"""RTN: round-to-nearest on the min/max grid, optionally with a per-group MSE clip search."""

from __future__ import annotations

from dataclasses import dataclass

import dllm_kernels
from dllm_calib import MethodConfig
from dllm_kernels import QuantSpec, torch_grid
from torch import Tensor

from dllm_weightquant._checks import check_uniform_spec, check_weight
from dllm_weightquant.grid import ClipSearch, search_params
from dllm_weightquant.qweight import QuantizedWeight

__all__ = ["RTNConfig", "fake_quantize_weight", "rtn_quantize", "weight_cells"]


@dataclass(frozen=True)
class RTNConfig(MethodConfig):
    """Round-to-nearest.

    Attributes:
        clip: None for plain min/max scales (exactly ``dllm_kernels.quantize``), or a ``ClipSearch`` that
            shrinks each group's range to minimise its own quantization error.
    """

    clip: ClipSearch | None = None


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


def _grid_quantize(
    weight: Tensor, spec: QuantSpec, clip: ClipSearch | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Signed grid codes ``[rows, cells, n]`` of ``weight_cells(weight)`` and their scale and zero
    ``[rows, cells, 1]`` (zero None if symmetric)."""
    cells = weight_cells(weight.float(), spec)
    scale, zero = search_params(cells, spec.bits, spec.symmetric, clip)
    scale, zero = scale[..., None], None if zero is None else zero[..., None]
    return torch_grid.encode(cells, scale, zero, spec.bits), scale, zero


def rtn_quantize(
    weight: Tensor, hessian: Tensor | None, spec: QuantSpec, config: RTNConfig | None = None
) -> QuantizedWeight:
    """Round ``weight [out, in]`` to the grid of ``spec``; ``hessian`` is ignored (the common signature).

    Without a clip search this is ``dllm_kernels.quantize`` (min/max scales, on the weight's device); with
    one, every cell's range is shrunk to the ratio with the least error (see ``grid.ClipSearch``). Works on
    any device; the result lives on the CPU.
    """
    config = config or RTNConfig()
    w = check_weight(weight)
    spec = check_uniform_spec(spec, w.shape[1], "RTN")
    if config.clip is None:
        codes, scale, zero = dllm_kernels.quantize(w, spec)
        return QuantizedWeight.from_codes(codes, scale, zero, spec)
    codes, scale, zero = _grid_quantize(w, spec, config.clip)
    shape = QuantizedWeight.scale_shape(spec, *w.shape)
    codes, scale = codes.reshape(w.shape), scale.reshape(shape)
    if zero is not None:
        codes, zero = torch_grid.to_unsigned(codes, zero.reshape(shape), spec.bits)
    return QuantizedWeight.from_codes(codes, scale, zero, spec)


def fake_quantize_weight(weight: Tensor, spec: QuantSpec, clip: ClipSearch | None = None) -> Tensor:
    """``dequantize(rtn(weight))`` as float32 on the weight's device (the proxy quantizer of AWQ's search)."""
    return torch_grid.decode(*_grid_quantize(weight, spec, clip)).reshape(weight.shape)
