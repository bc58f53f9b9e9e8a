"""QDLM's SmoothQuant and DuQuant settings through the pipeline on random tiny LLaDA (MHA) and Dream (GQA):
all four smoothing pairs with a per-pair alpha, and DuQuant followed by asymmetric per-channel RTN with a
fixed weight clip (swc 0.8) and asymmetric per-token activations with lac 0.9; export and reload."""

from __future__ import annotations

import pytest
import torch
from dllm_actquant import SMOOTH_PAIRS, ActQuantLinear, OnlineRotation
from dllm_bench.loading import load_any
from dllm_bench.pipeline import export_model, quantize_model
from dllm_bench.recipes import Recipe
from dllm_sampler.testing import CHAR_VOCAB, random_char_model
from dllm_weightquant import QuantLinear, set_compute_dtype
from dllm_weightquant.awq import AWQ_GROUPS

CALIBRATION = {"builder": "random", "params": {"num_samples": 6, "seq_len": 24}, "batch_size": 4}


def _recipe(
    name: str, weights: dict, activations: int, steps: list[dict], attention: int | None = None
) -> Recipe:
    return Recipe.model_validate(
        {
            "name": name,
            "calibration": CALIBRATION,
            "scheme": {"weights": weights, "activations": activations, "attention": attention},
            "steps": steps,
            "ignore": ["head", "embedding"],
        }
    )


def _probe() -> torch.Tensor:
    return torch.randint(4, CHAR_VOCAB, (3, 20), generator=torch.Generator().manual_seed(1))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _inner(module: torch.nn.Module, cls: type) -> torch.nn.Module:
    """The first module of class ``cls`` down the ``.inner`` chain of run-time wrappers."""
    while not isinstance(module, cls):
        module = module.inner
    return module


def test_smoothquant_pairs_are_awqs_group_names() -> None:
    assert SMOOTH_PAIRS == AWQ_GROUPS


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_smoothquant_recipe_with_all_four_pairs_stays_close_at_w8a8(arch: str) -> None:
    dlm = random_char_model(arch)
    ids = _probe()
    with torch.no_grad():
        reference = dlm.logits(ids)
    recipe = _recipe(
        "smoothquant-qdlm",
        {"bits": 8, "symmetric": False, "granularity": "channel"},
        8,
        [
            {"method": "smoothquant", "alpha": 0.5, "pairs": list(SMOOTH_PAIRS), "alphas": {"down": 0.8}},
            {"method": "rtn"},
            {"method": "act_quant", "symmetric": False},
        ],
    )
    quantize_model(dlm, recipe, progress=False)
    with torch.no_grad():
        assert 0 < _rel(dlm.logits(ids), reference) < 0.05


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_duquant_at_qdlm_settings_runs_end_to_end_and_reloads(tmp_path, arch: str) -> None:
    """DuQuant (smoothing + rotations), RTN with asymmetric per-channel 4-bit weights and ``clip_ratio`` 0.8,
    asymmetric per-token 4-bit activations clipped at 0.9: every block linear ends as rotation -> activation
    quantizer -> quantized weight with zero points, and the exported model reloads to the same logits."""
    dlm = random_char_model(arch)
    ids = _probe()
    with torch.no_grad():
        reference = dlm.logits(ids)
    recipe = _recipe(
        "duquant-qdlm",
        {"bits": 4, "symmetric": False, "granularity": "channel"},
        4,
        [
            {"method": "duquant", "max_rotation_step": 8, "smooth": True, "alpha": 0.5},
            {"method": "rtn", "clip_ratio": 0.8},
            {"method": "act_quant", "symmetric": False, "clip_ratio": 0.9},
        ],
        attention=16,  # Q/K/V float: 4-bit attention sites would turn kernel-vs-fake rounding into flips
    )
    result = quantize_model(dlm, recipe, progress=False)
    with torch.no_grad():
        quantized = dlm.logits(ids)
    assert torch.isfinite(quantized).all()
    assert 0 < _rel(quantized, reference) < 0.2  # measured 0.07 (W4A4, random weights)
    for name in dlm.topology.linear_names():
        module = dlm.model.get_submodule(name)
        assert isinstance(module, OnlineRotation), name
        act = _inner(module, ActQuantLinear)
        assert not act.config.symmetric and act.config.clip_ratio == 0.9
        weight = _inner(act, QuantLinear)
        assert weight.weight_zero_point is not None and not weight._meta["spec"].symmetric

    loaded = load_any(export_model(result, tmp_path / "q"))
    set_compute_dtype(loaded.model, torch.float32)  # exact float32 GEMMs (the CPU default is bf16 A16)
    with torch.no_grad():
        assert _rel(loaded.logits(ids), quantized) < 1e-3
