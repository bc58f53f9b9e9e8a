"""ABMP (Quant-dLLM's Adaptive Blockwise Mixed Precision) on top of DAQ.

docs/references.md#abmp: columns of a weight are split into blocks of ``group_size`` (128); block ``g`` scores
``s_g = sum_{i, j in g} Z_ij`` with DAQ's DOR importance ``Z``. Within the layer, the ``k = floor(rho * n)``
highest-scoring blocks get ``b + 1`` planes and the ``k`` lowest ``b - 1`` (``b = spec.bits``; the paper's
2-bit setting gives 3 / 1 / 2 bits), so the mean is exactly ``b`` bits per weight. Ties are broken by block
index (earlier block first). Each block is then quantized by DAQ with its order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from dllm_calib import MethodConfig, check_range
from dllm_kernels import QuantSpec
from torch import Tensor

from dllm_weightquant._checks import check_weight
from dllm_weightquant.daq import (
    MAX_ORDER,
    DAQConfig,
    check_daq_spec,
    daq_group_size,
    prepare_dor,
    quantize_groups,
)
from dllm_weightquant.multibinary import MultiBinaryWeight

__all__ = ["ABMPConfig", "abmp_orders", "abmp_quantize", "check_abmp_spec"]


@dataclass(frozen=True)
class ABMPConfig(MethodConfig):
    """ABMP settings.

    Attributes:
        rho: fraction of blocks moved up and (as many) moved down one bit, in [0, 0.5] (0.05 for LLaDA,
            0.10 for Dream in the paper's ablation).
        daq: the DAQ settings used for every block.
    """

    rho: float = 0.05
    daq: DAQConfig = field(default_factory=DAQConfig)

    def validate(self) -> None:
        check_range("ABMPConfig", "rho", self.rho, 0.0, 0.5)


def abmp_orders(scores: Tensor, base_bits: int, rho: float) -> list[int]:
    """Bits per block: ``base_bits + 1`` for the top ``floor(rho * n)`` scores, ``base_bits - 1`` for the
    bottom
    as many, ``base_bits`` otherwise. ``scores [n]``."""
    n = scores.shape[0]
    k = int(rho * n + 1e-9)  # floor, robust to 0.29 * 100 = 28.999...
    order = torch.argsort(scores.to(torch.float64), descending=True, stable=True).tolist()
    bits = [base_bits] * n
    for i in order[:k]:
        bits[i] = base_bits + 1
    for i in order[n - k :]:
        bits[i] = base_bits - 1
    return bits


def check_abmp_spec(spec: object) -> QuantSpec:
    """``spec`` if ABMP can fit it: a symmetric integer group spec of 2 or 3 bits (blocks move one bit up
    and down, within DAQ's 1 to 4 planes).

    Raises:
        ValueError: naming what does not fit and the settings that do.
    """
    if isinstance(spec, QuantSpec) and spec.granularity != "group":
        raise ValueError(
            f"ABMP allocates bits to column blocks: use granularity='group' (e.g. 128), got {spec}"
        )
    if isinstance(spec, QuantSpec) and not 2 <= spec.bits <= MAX_ORDER - 1:
        raise ValueError(
            f"ABMP moves blocks one bit up and down around spec.bits, which must be 2 or {MAX_ORDER - 1} "
            f"(W2A16 or W3A16); got bits={spec.bits}"
        )
    return check_daq_spec(spec, "ABMP", MAX_ORDER - 1)


def abmp_quantize(
    weight: Tensor, hessian: Tensor, spec: QuantSpec, config: ABMPConfig | None = None
) -> MultiBinaryWeight:
    """ABMP + DAQ: blocks of ``spec.group_size`` columns at ``spec.bits - 1 / + 0 / + 1`` planes (mean
    ``spec.bits``).

    Needs a symmetric group spec with 2 <= bits <= 3 (planes 1..4); raises ``ValueError`` otherwise.
    """
    config = config or ABMPConfig()
    spec = check_abmp_spec(spec)
    w = check_weight(weight)
    out, inp = w.shape
    group = daq_group_size(spec, inp, "ABMP")
    ctx = prepare_dor(w, hessian, config.daq, "ABMP")
    scores = ctx.z.reshape(out, inp // group, group).sum(dim=(0, 2))
    return quantize_groups(ctx, abmp_orders(scores, spec.bits, config.rho), group, config.daq)
