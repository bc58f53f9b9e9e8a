"""Each ``qdlm-*`` preset quantizes exactly the sites the seed study's code quantizes, at its settings.

The expectations below are written from QDLM's scripts and code (see each recipe file), and the actual
sites are read from the quantized model (`quantized_sites`), never from the recipe. The runs use tiny
random models, a few random calibration states and shortened searches (greedy rotation steps, AWQ grid,
clip grid), which change no site or setting.
"""

from __future__ import annotations

import pytest
from dllm_bench.pipeline import quantize_model, quantized_sites
from dllm_bench.recipes import Recipe, load_recipe
from dllm_sampler.testing import random_char_model
from dllm_weightquant import QuantLinear

CALIBRATION = {"builder": "random", "params": {"num_samples": 4, "seq_len": 16}, "batch_size": 2}
_SHORTER = {
    "duquant": {"max_rotation_step": 4},
    "awq": {"n_grid": 4, "clip_n_grid": 4},
    "gptq": {"clip": {"grid": 10, "max_shrink": 0.8, "norm": 2.4}},
}
_WIDE = {  # every block linear's input width a multiple of the study's group size 128
    "llada": {"d_model": 128, "mlp_hidden_size": 256},
    "dream": {"hidden_size": 128, "intermediate_size": 256},
}
_FLOAT_ATTENTION = {"q": "float", "k": "float", "v": "float", "qk_rotation": "none"}

EXPECTED = {
    "qdlm-gptq": {
        "weights": "int4 sym group128",
        "linear inputs": "float",
        "online rotations": "none",
        **_FLOAT_ATTENTION,
    },
    "qdlm-awq": {
        "weights": "int4 asym group128",
        "linear inputs": "float",
        "online rotations": "none",
        **_FLOAT_ATTENTION,
    },
    "qdlm-smoothquant": {
        "weights": "int8 asym per-channel",
        "linear inputs": "int8 asym per-token",
        "online rotations": "none",
        "q": "int8 asym per-token-head",
        "k": "int8 asym per-token-head",
        "v": "int8 asym per-token-head",
        "qk_rotation": "none",
    },
    "qdlm-quarot": {
        "weights": "int4 sym per-channel",
        "linear inputs": "int4 sym per-token",
        "online rotations": "o (HeadRotation), down (HadamardRotation)",
        "q": "float",
        "k": "int4 sym per-token",
        "v": "int4 sym per-token",
        "qk_rotation": "hadamard",
    },
    "qdlm-duquant": {
        "weights": "int4 asym per-channel",
        "linear inputs": "int4 asym per-token clip0.9",
        "online rotations": ", ".join(
            f"{r} (BlockRotation)" for r in ("q", "k", "v", "o", "gate", "up", "down")
        ),
        "q": "int4 asym per-token-head",
        "k": "int4 asym per-token-head",
        "v": "int4 asym per-token-head",
        "qk_rotation": "none",
    },
}


def _fast(name: str) -> Recipe:
    data = load_recipe(name).to_dict()
    data["calibration"] = CALIBRATION
    data["steps"] = [{**s, **_SHORTER.get(s["method"], {})} for s in data["steps"]]
    return Recipe.model_validate(data)


@pytest.mark.parametrize("arch", ["llada", "dream"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_quantizes_the_studys_sites(arch: str, name: str) -> None:
    dlm = random_char_model(arch, **_WIDE[arch])
    quantize_model(dlm, _fast(name), progress=False)
    assert quantized_sites(dlm) == EXPECTED[name]


def test_qdlm_gptq_runs_without_act_order_and_kv16_keeps_attention_float() -> None:
    dlm = random_char_model("llada", **_WIDE["llada"])
    quantize_model(dlm, _fast("qdlm-gptq"), progress=False)
    for name in dlm.topology.linear_names():
        layer = dlm.model.get_submodule(name)
        assert isinstance(layer, QuantLinear) and layer.weight_g_idx is None  # desc_act=False
    dlm = random_char_model("dream", **_WIDE["dream"])
    quantize_model(dlm, _fast("qdlm-duquant").with_scheme("W4A4KV16"), progress=False)
    sites = quantized_sites(dlm)
    assert {k: sites[k] for k in _FLOAT_ATTENTION} == _FLOAT_ATTENTION
    assert sites["linear inputs"] == "int4 asym per-token clip0.9"


def test_sites_of_a_float_model_are_all_float() -> None:
    sites = quantized_sites(random_char_model("dream"))
    float_sites = {"weights": "float", "linear inputs": "float", "online rotations": "none"}
    assert sites == {**float_sites, **_FLOAT_ATTENTION}
