"""Hand a `CalibrationSet` to other PTQ tools (llm-compressor, GPTQModel, AutoAWQ).

Those tools calibrate on a list or dataset of tokenised samples with ``input_ids`` and ``attention_mask``.
Our states already are token ids, with mask tokens at masked positions, so the export is a plain
conversion; the states' order is kept. The tools see the masked inputs exactly as our collectors do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dllm_calib.state import CalibrationSet

__all__ = ["to_calibration_list", "to_hf_dataset"]


def to_calibration_list(cset: CalibrationSet) -> list[dict[str, list[int]]]:
    """One ``{"input_ids": [int] * L, "attention_mask": [0|1] * L}`` dict per state, in order.

    This is the list form GPTQModel's ``quantize(calibration_dataset=...)`` and AutoAWQ's ``calib_data``
    accept; llm-compressor takes it through ``datasets.Dataset.from_list`` (or use `to_hf_dataset`).
    """
    return [
        {"input_ids": s.input_ids.tolist(), "attention_mask": s.attention_mask.to(int).tolist()}
        for s in cset.states
    ]


def to_hf_dataset(cset: CalibrationSet) -> Any:
    """A Hugging Face ``datasets.Dataset`` with ``input_ids`` and ``attention_mask`` columns, one row a state.

    Raises:
        ImportError: when the optional ``datasets`` package is not installed.
    """
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            "CalibrationSet.to_hf_dataset() needs the Hugging Face 'datasets' package, which is not "
            "installed; "
            "install it with `pip install datasets` (or `uv add datasets`), or use to_calibration_list()"
        ) from err
    return datasets.Dataset.from_list(to_calibration_list(cset))
