"""Scale cells of a spec on a ``[rows, cols]`` tensor: every backend lays them out the same way.

A cell is a contiguous run of the row-major tensor: the whole tensor (``tensor``), one row (``channel``,
``token``) or ``group_size`` consecutive columns of a row (``group``). So ``x.reshape(-1, cell_size)`` lists
the cells in the order of the flattened scale, and the scale has :func:`scale_shape`.
"""

from __future__ import annotations

from dllm_kernels.spec import QuantSpec

__all__ = ["cell_size", "scale_shape"]


def cell_size(spec: QuantSpec, rows: int, cols: int) -> int:
    """Elements per scale cell; raises ``ValueError`` if ``group_size`` does not divide ``cols``."""
    if spec.granularity == "tensor":
        return rows * cols
    if spec.granularity != "group":
        return cols
    assert spec.group_size is not None
    if cols % spec.group_size:
        raise ValueError(
            f"cols={cols} is not divisible by group_size={spec.group_size}; pad the input dim or pick a "
            "group_size that divides it"
        )
    return spec.group_size


def scale_shape(spec: QuantSpec, rows: int, cols: int) -> tuple[int, ...]:
    """``(1,)`` (tensor), ``(rows, 1)`` (channel, token) or ``(rows, cols / group_size)`` (group)."""
    if spec.granularity == "tensor":
        return (1,)
    return (rows, cols // cell_size(spec, rows, cols))
