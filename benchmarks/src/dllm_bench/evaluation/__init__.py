"""Evaluation of quantized diffusion LMs against their float reference.

* ``fidelity``: top-1 agreement and KL(reference || model) on masked positions, per mask ratio
  (`mask_ratio_fidelity`);
* ``steps``: error over the denoising steps, teacher-forced on the reference's trajectory and
  free-running (`step_error`);
* ``outliers``: ``max|x| / RMS(x)`` of every block Linear input per layer and mask-ratio bucket
  (`activation_outliers`);
* ``plots``: PNGs of the last two (`plot_step_error`, `plot_outliers`).

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
from dllm_bench.evaluation.outliers import INPUT_ROLES, OutlierRow, activation_outliers, outlier_states
from dllm_bench.evaluation.plots import plot_outliers, plot_step_error, save_figure
from dllm_bench.evaluation.steps import StepRow, step_error, step_error_on_prompts

__all__ = [
    "INPUT_ROLES",
    "FidelityInputs",
    "FidelityRow",
    "OutlierRow",
    "StepRow",
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
    "save_figure",
    "step_error",
    "step_error_on_prompts",
]
