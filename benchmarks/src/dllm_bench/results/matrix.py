"""The method x bit-setting matrix of docs/results.md: which cells run, and how one cell is measured.

A cell quantizes a fresh copy of a model with one shipped recipe moved to one bit setting
(`Recipe.with_scheme`), then scores the quantized model on the same held-out data as the float model:
arithmetic exact match and answer characters with the real sampler, code ELBO NLL, and fidelity to the
float model (top-1 agreement and KL on masked positions, averaged over mask ratios).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from dllm_sampler import DiffusionLM
from dllm_sampler.moe_topology import MoETopology
from dllm_sampler.tasks import (
    character_accuracy,
    code_nll,
    exact_accuracy,
    generate_answers,
    heldout_problems,
)

from dllm_bench.evaluation import mask_ratio_fidelity
from dllm_bench.loading import load_any
from dllm_bench.pipeline import quantize_model
from dllm_bench.recipes import load_recipe, moe_variant

__all__ = [
    "ACTIVATION_METHODS",
    "ACTIVATION_SETTINGS",
    "MOE_ACTIVATION_SETTINGS",
    "MOE_METHODS",
    "MOE_WEIGHT_SETTINGS",
    "QDLM_ACTIVATION_METHODS",
    "QDLM_ACTIVATION_SETTINGS",
    "QDLM_WEIGHT_ONLY_METHODS",
    "WEIGHT_ONLY_METHODS",
    "WEIGHT_ONLY_SETTINGS",
    "Cell",
    "CellResult",
    "EvalSettings",
    "default_cells",
    "measure",
    "moe_cells",
    "qdlm_cells",
    "run_cell",
]

WEIGHT_ONLY_SETTINGS = ("W4A16", "W3A16", "W2A16")
ACTIVATION_SETTINGS = ("W8A8", "W4A8", "W4A4")
WEIGHT_ONLY_METHODS = ("rtn", "gptq", "awq", "quarot", "quant-dllm", "dllmquant")
"""Run at the weight-only settings. dllmquant there is QuaRot + CGQ and quarot is QuaRot + plain GPTQ
(activation quantizers and IA-AQ only apply when activations are quantized), so the two separate CGQ's
share of dllmquant's gain from the rotation's; quant-dllm's ABMP is defined for 2 and 3 bits only."""
ACTIVATION_METHODS = ("rtn", "gptq", "smoothquant", "quarot", "duquant", "dllmquant")
"""Run at the weight-and-activation settings (rtn and gptq with default per-token activation quantizers)."""
_ABMP_SETTINGS = ("W3A16", "W2A16")

QDLM_WEIGHT_ONLY_METHODS = ("qdlm-gptq", "qdlm-awq", "dllmquant-awq")
"""The study's weight-only presets at W4A16 (with DLLMQuant on its AWQ host beside them)."""
QDLM_ACTIVATION_METHODS = ("qdlm-smoothquant", "qdlm-quarot", "qdlm-duquant", "dllmquant")
"""The study's weight-and-activation presets (with DLLMQuant on its QuaRot host beside them)."""
QDLM_ACTIVATION_SETTINGS = ("W8A8", "W4A4", "W4A4KV16")
"""W4A4 quantizes each preset's Q/K/V sites; W4A4KV16 is the same run with them in float, so the pair
shows what quantizing the attention activations costs."""

MOE_METHODS = ("rtn", "gptq", "dllmquant")
"""The methods that quantize mixture-of-experts models (dllmquant runs as its MoE variant, dllmquant-moe:
CGQ on TMAS states without the QuaRot host); the rotation and smoothing methods refuse MoE blocks."""
MOE_WEIGHT_SETTINGS = ("W4A16g128", "W4A16ch", "W3A16g128", "W3A16ch")
"""Groups of 128 and per channel named explicitly: the recipes' own defaults differ (gptq groups, dllmquant
channels), and the MoE page compares them on the same grid."""
MOE_ACTIVATION_SETTINGS = ("W8A8KV16ch", "W4A8KV16ch")
"""Dynamic per-token activations on the linears, attention in float (MoE models keep Q/K/V unquantized)."""


@dataclass(frozen=True)
class Cell:
    """One quantization run: a model (name or folder), a shipped recipe and a bit setting label."""

    model: str
    recipe: str
    setting: str


@dataclass(frozen=True)
class EvalSettings:
    """How much evaluation each cell gets (the regeneration budget is set here).

    Attributes:
        problems: held-out arithmetic problems (the first ``problems`` of ``heldout_problems()``).
        code_chunks: held-out 63-token stdlib chunks for the code NLL.
        mc_num: Monte-Carlo samples per chunk of the ELBO estimator.
        fidelity_ratios: mask ratios of the fidelity measurement.
        calib_samples: calibration states per recipe (None: the recipe's own number).
    """

    problems: int = 128
    code_chunks: int = 32
    mc_num: int = 16
    fidelity_ratios: tuple[float, ...] = (0.25, 0.5, 0.75)
    calib_samples: int | None = None


@dataclass
class CellResult:
    """The scores of one model state (float or quantized); fidelity fields are None for the float model.

    Attributes:
        exact: fraction of problems answered exactly.
        chars: fraction of answer characters right.
        code_nll: nats per token.
        top1: top-1 agreement with the float model on masked positions, mean over mask ratios.
        kl: KL(float || quantized) in nats per masked token, mean over mask ratios.
        seconds: calibration + quantization wall time (s), 0 for the float model.
    """

    model: str
    recipe: str
    setting: str
    exact: float
    chars: float
    code_nll: float
    top1: float | None = None
    kl: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """Plain JSON-ready fields."""
        return asdict(self)


def default_cells(models: tuple[str, ...] = ("tiny-llada", "tiny-dream")) -> list[Cell]:
    """Every cell of docs/results.md, in table order."""
    cells = []
    for model in models:
        for setting in WEIGHT_ONLY_SETTINGS:
            cells += [
                Cell(model, m, setting)
                for m in WEIGHT_ONLY_METHODS
                if m != "quant-dllm" or setting in _ABMP_SETTINGS
            ]
        for setting in ACTIVATION_SETTINGS:
            cells += [Cell(model, m, setting) for m in ACTIVATION_METHODS]
    return cells


def moe_cells(models: tuple[str, ...] = ("tiny-llada2",)) -> list[Cell]:
    """The cells of docs/results-llada2.md (mixture-of-experts models), in table order."""
    settings = MOE_WEIGHT_SETTINGS + MOE_ACTIVATION_SETTINGS
    return [Cell(model, m, setting) for model in models for setting in settings for m in MOE_METHODS]


def qdlm_cells(models: tuple[str, ...] = ("tiny-llada", "tiny-dream")) -> list[Cell]:
    """The cells of docs/results-qdlm.md (the seed study's presets), in table order."""
    cells = []
    for model in models:
        cells += [Cell(model, m, "W4A16") for m in QDLM_WEIGHT_ONLY_METHODS]
        for setting in QDLM_ACTIVATION_SETTINGS:
            cells += [Cell(model, m, setting) for m in QDLM_ACTIVATION_METHODS]
    return cells


def measure(
    dlm: DiffusionLM, cell: Cell, settings: EvalSettings, reference: DiffusionLM | None = None
) -> CellResult:
    """Score ``dlm`` (fidelity against ``reference`` when given)."""
    problems = heldout_problems(settings.problems)
    texts = generate_answers(dlm, problems)
    exact = exact_accuracy(texts, problems)
    result = CellResult(
        model=cell.model,
        recipe=cell.recipe,
        setting=cell.setting,
        exact=exact,
        chars=character_accuracy(texts, problems),
        code_nll=code_nll(dlm, n_chunks=settings.code_chunks, mc_num=settings.mc_num),
    )
    if reference is not None:
        rows = mask_ratio_fidelity(dlm, reference, ratios=settings.fidelity_ratios)
        result.top1 = sum(r.top1_agreement for r in rows) / len(rows)
        result.kl = sum(r.kl for r in rows) / len(rows)
    return result


def run_cell(cell: Cell, settings: EvalSettings, reference: DiffusionLM) -> CellResult:
    """Quantize a fresh float32 copy of ``cell.model`` with ``cell.recipe`` at ``cell.setting`` and score it
    against ``reference`` (the float model, left untouched). On a mixture-of-experts model a recipe with an
    MoE variant (``dllmquant``) runs as that variant, as ``dllmq quantize`` does."""
    dlm = load_any(cell.model, dtype=torch.float32)
    variant = moe_variant(cell.recipe) if isinstance(dlm.topology, MoETopology) else None
    recipe = load_recipe(variant or cell.recipe, scheme=cell.setting)
    if settings.calib_samples is not None:
        recipe = recipe.with_calibration_samples(settings.calib_samples)
    start = time.perf_counter()
    quantize_model(dlm, recipe, device="cpu", progress=False)
    seconds = time.perf_counter() - start
    result = measure(dlm, cell, settings, reference)
    result.seconds = seconds
    return result
