"""Evaluation of quantized diffusion LMs against their float reference.

* ``fidelity``: top-1 agreement and KL(reference || model) on masked positions, per mask ratio
  (`mask_ratio_fidelity`);
* ``steps``: error over the denoising steps, teacher-forced on the reference's trajectory and
  free-running (`step_error`);
* ``outliers``: ``max|x| / RMS(x)`` of every block Linear input per layer and mask-ratio bucket
  (`activation_outliers`);
* ``plots``: PNGs of the last two (`plot_step_error`, `plot_outliers`; imported on first use, so scoring a
  model never imports matplotlib);
* ``memory``: stored bytes and bits per weight of a (quantized) model (`weight_memory`);
* ``speed``: ms per denoising step, tokens/s and peak memory of the real sampler (`sampler_speed`).

Each result is a list of small frozen dataclass rows with ``to_dict()`` for JSON and CSV.
"""

from dllm_bench.evaluation.fidelity import (
    FidelityInputs,
    FidelityRow,
    arithmetic_inputs,
    check_comparable,
    code_inputs,
    compare_logits,
    mask_exactly,
    mask_ratio_fidelity,
)
from dllm_bench.evaluation.memory import WeightMemory, resident_bytes, weight_memory
from dllm_bench.evaluation.outliers import INPUT_ROLES, OutlierRow, activation_outliers, outlier_states
from dllm_bench.evaluation.speed import PEAK_SOURCES, SpeedResult, random_prompt, sampler_speed, speed_config
from dllm_bench.evaluation.steps import StepRow, step_error, step_error_on_prompts

_PLOTS = ("plot_outliers", "plot_step_error", "save_figure")


def __getattr__(name: str) -> object:
    """The matplotlib-backed plot functions, imported on first use."""
    if name in _PLOTS:
        from dllm_bench.evaluation import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "INPUT_ROLES",
    "PEAK_SOURCES",
    "FidelityInputs",
    "FidelityRow",
    "OutlierRow",
    "SpeedResult",
    "StepRow",
    "WeightMemory",
    "activation_outliers",
    "arithmetic_inputs",
    "check_comparable",
    "code_inputs",
    "compare_logits",
    "mask_exactly",
    "mask_ratio_fidelity",
    "outlier_states",
    "plot_outliers",
    "plot_step_error",
    "random_prompt",
    "resident_bytes",
    "sampler_speed",
    "save_figure",
    "speed_config",
    "step_error",
    "step_error_on_prompts",
    "weight_memory",
]
