"""Recipes: shipped ones load and round-trip through YAML, bit-setting overrides, validation errors."""

from __future__ import annotations

import pytest
from dllm_bench.recipes import (
    SCHEME_LABELS,
    CalibrationSpec,
    Recipe,
    Scheme,
    Step,
    WeightScheme,
    available_recipes,
    load_recipe,
    parse_scheme,
)
from dllm_kernels import QuantSpec
from pydantic import ValidationError

SHIPPED = {
    "rtn",
    "gptq",
    "awq",
    "smoothquant",
    "quarot",
    "duquant",
    "dllmquant",
    "quant-dllm",
    "dllmquant-moe",
}
PAPER_PRESETS = {
    "qdlm-gptq",
    "qdlm-awq",
    "qdlm-smoothquant",
    "qdlm-quarot",
    "qdlm-duquant",
    "dllmquant-awq",
    "quant-dllm-paper",
    "quant-dllm-paper-dream",
}


def _recipe(**overrides) -> dict:
    base = {
        "name": "t",
        "calibration": {"builder": "random", "params": {"num_samples": 4, "seq_len": 16}},
        "scheme": {"weights": {"bits": 4, "group_size": 16}, "activations": 16},
        "steps": [{"method": "gptq"}],
    }
    return {**base, **overrides}


def test_every_shipped_recipe_loads_and_round_trips() -> None:
    assert set(available_recipes()) == SHIPPED | PAPER_PRESETS
    for name in SHIPPED | PAPER_PRESETS:
        recipe = load_recipe(name)
        assert recipe.name == name
        again = Recipe.from_yaml(recipe.to_yaml())
        assert again == recipe
        assert again.to_yaml() == recipe.to_yaml()


@pytest.mark.parametrize(
    ("name", "label", "steps"),
    [
        ("gptq", "W4A16g128", ["gptq"]),
        ("awq", "W4A16g128", ["awq", "rtn"]),
        ("smoothquant", "W8A8", ["smoothquant", "rtn", "act_quant"]),
        ("quarot", "W4A4", ["quarot", "gptq", "act_quant"]),
        ("duquant", "W4A4", ["duquant", "rtn", "act_quant"]),
        ("dllmquant", "W4A4", ["quarot", "iaaq", "cgq", "act_quant", "attn_quant"]),
        ("quant-dllm", "W2A16g128", ["abmp"]),
        ("qdlm-gptq", "W4A16g128", ["gptq"]),
        ("qdlm-awq", "W4A16g128", ["awq", "rtn"]),
        ("qdlm-smoothquant", "W8A8", ["smoothquant", "rtn", "act_quant", "attn_quant"]),
        ("qdlm-quarot", "W4A4", ["quarot", "gptq", "act_quant", "attn_quant"]),
        ("qdlm-duquant", "W4A4", ["duquant", "rtn", "act_quant", "attn_quant"]),
        ("dllmquant-awq", "W4A16g128", ["awq", "cgq"]),
        ("quant-dllm-paper", "W2A16g128", ["abmp"]),
        ("quant-dllm-paper-dream", "W2A16g128", ["abmp"]),
    ],
)
def test_shipped_recipes_use_their_papers_settings(name: str, label: str, steps: list[str]) -> None:
    recipe = load_recipe(name)
    assert recipe.scheme.label == label
    assert [s.method for s in recipe.steps] == steps
    assert recipe.ignore == ["head", "embedding"]


def test_dllmquant_and_quant_dllm_use_their_calibration() -> None:
    assert load_recipe("dllmquant").calibration.builder == "tmas"
    mcs = load_recipe("quant-dllm").calibration
    assert mcs.builder == "mcs" and mcs.params["gamma"] == 0.25


@pytest.mark.parametrize("label", SCHEME_LABELS)
def test_uniform_recipes_run_at_every_setting(label: str) -> None:
    for name in ("rtn", "gptq", "awq", "smoothquant", "quarot", "duquant", "dllmquant"):
        recipe = load_recipe(name, scheme=label)
        parsed = parse_scheme(label)
        assert recipe.scheme.weights.bits == parsed.weight_bits
        assert recipe.scheme.activations == parsed.activation_bits
        assert recipe.steps == load_recipe(name).steps


def test_scheme_override_keeps_or_sets_the_group_size() -> None:
    assert load_recipe("gptq", scheme="W3A16").scheme.weights.group_size == 128
    moved = load_recipe("gptq", scheme="W3A16g64").scheme
    assert (moved.weights.bits, moved.weights.group_size, moved.label) == (3, 64, "W3A16g64")
    channel = load_recipe("quarot", scheme="W8A8").scheme.weights.spec()
    assert channel == QuantSpec(bits=8, symmetric=True, granularity="channel")
    per_channel = load_recipe("rtn", scheme="W8A8ch").scheme  # rtn's own weights are group-wise
    assert per_channel.weights.spec() == QuantSpec(bits=8, symmetric=True, granularity="channel")
    assert (per_channel.label, parse_scheme("w4a8kv16_ch").per_channel) == ("W8A8", True)
    with pytest.raises(ValueError, match="ch"):
        parse_scheme("W8A8g128ch")


def test_multibinary_quantizers_reject_settings_they_cannot_represent() -> None:
    assert load_recipe("quant-dllm", scheme="W3A16").scheme.weights.bits == 3
    with pytest.raises(ValueError, match=r"recipe 'quant-dllm' at W4A16: .*abmp"):
        load_recipe("quant-dllm", scheme="W4A16")
    with pytest.raises(ValidationError, match="daq"):
        Recipe.model_validate(_recipe(steps=[{"method": "daq"}], scheme={"weights": {"bits": 8}}))


def test_attention_width_follows_the_activations_unless_the_label_says_kv() -> None:
    w4a4 = load_recipe("quarot", scheme="W4A4").scheme
    assert (w4a4.label, w4a4.activation_bits, w4a4.attention_bits) == ("W4A4", 4, 4)
    kv16 = load_recipe("quarot", scheme="W4A4KV16").scheme
    assert (kv16.label, kv16.activation_bits, kv16.attention_bits) == ("W4A4KV16", 4, None)
    kv8 = load_recipe("gptq", scheme="W4A4KV8g64").scheme
    assert (kv8.label, kv8.attention_bits) == ("W4A4KV8g64", 8)
    assert load_recipe("gptq", scheme="W4A16").scheme.attention_bits is None
    with pytest.raises(ValueError, match="only be quantized when the linear inputs are"):
        parse_scheme("W4A16KV4")


def _planned(label: str) -> list[str]:
    return [method.name for method, _ in load_recipe("rtn").with_scheme(label).plan()]


def test_plan_adds_or_drops_the_attention_quantizer_with_the_scheme() -> None:
    assert _planned("W4A16") == ["rtn"]
    assert _planned("W4A4")[0] == "rtn" and sorted(_planned("W4A4")[1:]) == ["act_quant", "attn_quant"]
    assert _planned("W4A4KV16") == ["rtn", "act_quant"]
    k_only = [{"method": "rtn"}, {"method": "attn_quant", "sites": ["k"], "per_head": False}]
    listed = Recipe.model_validate(_recipe(steps=k_only, scheme={"weights": {"bits": 4}, "activations": 4}))
    planned = {method.name: config for method, config in listed.plan()}
    assert planned["attn_quant"].sites == ("k",) and planned["attn_quant"].bits == 4
    assert planned["act_quant"].bits == 4 and len(planned) == 3
    with pytest.raises(ValidationError, match="bits from the scheme"):
        Recipe.model_validate(_recipe(steps=[{"method": "rtn"}, {"method": "attn_quant", "bits": 8}]))


@pytest.mark.parametrize("label", ["W5A16", "W4A2", "4bit", "W4A16g", "W4A4KV2", ""])
def test_bad_scheme_labels_name_the_accepted_form(label: str) -> None:
    with pytest.raises(ValueError, match="W<weight bits>A<activation bits>"):
        parse_scheme(label)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": [{"method": "gptq"}, {"method": "rtn"}]}, "exactly one weight quantizer"),
        ({"steps": [{"method": "quarot"}]}, "exactly one weight quantizer"),
        ({"steps": [{"method": "frobnicate"}]}, "unknown method 'frobnicate'"),
        ({"steps": [{"method": "gptq"}, {"method": "quarot"}]}, "listed too late"),
        ({"steps": [{"method": "gptq", "damp_percent": -1}]}, "damp_percent"),
        ({"steps": [{"method": "gptq", "dampening": 0.1}]}, "dampening"),
        ({"steps": [{"method": "act_quant"}, {"method": "rtn"}]}, "listed too late"),
        ({"steps": [{"method": "rtn"}, {"method": "act_quant", "bits": 4}]}, "bits come from the scheme"),
        (
            {"steps": [{"method": "duquant"}, {"method": "awq"}, {"method": "rtn"}]},
            "awq cannot follow duquant",
        ),
        (
            {"steps": [{"method": "quarot"}, {"method": "awq"}, {"method": "rtn"}]},
            "wraps the o, down linears",
        ),
        (
            {"steps": [{"method": "quarot"}, {"method": "smoothquant"}, {"method": "rtn"}]},
            "smoothquant cannot follow quarot",
        ),
        ({"steps": [{"method": "quarot", "seed": "x"}, {"method": "rtn"}]}, "QuaRotConfig.seed"),
        ({"scheme": {"weights": {"bits": 5}}}, "QuantSpec.bits"),
        ({"scheme": {"weights": {"bits": 4, "granularity": "channel", "group_size": 64}}}, "group_size"),
        ({"scheme": {"weights": {"bits": 4}, "activations": 6}}, "activations"),
        ({"calibration": {"builder": "nope"}}, "available"),
        ({"calibration": {"builder": "mcs", "params": {"gamma": 2.0}}}, "gamma"),
        ({"calibration": {"builder": "plain", "params": {"num_sample": 3}}}, "num_sample"),
        ({"calibration": {"builder": "plain", "path": "x.json"}}, "either path"),
        ({"calibration": {"builder": "plain", "sampler": {"steps": 4}}}, "only applies to the tmas"),
        ({"ignore": ["re:(unclosed"]}, "not a valid regular expression"),
        ({"stray": 1}, "stray"),
    ],
)
def test_invalid_recipes_raise_clear_errors(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Recipe.model_validate(_recipe(**change))


def test_awq_after_quarot_is_fine_without_the_groups_folding_into_wrapped_linears() -> None:
    steps = [{"method": "quarot"}, {"method": "awq", "groups": ["attn", "mlp"]}, {"method": "rtn"}]
    assert [s.method for s in Recipe.model_validate(_recipe(steps=steps)).steps] == ["quarot", "awq", "rtn"]
    steps[0] = {"method": "quarot", "online_o": False}
    steps[1] = {"method": "awq", "groups": ["attn", "vo", "mlp"]}
    assert [s.method for s in Recipe.model_validate(_recipe(steps=steps)).steps] == ["quarot", "awq", "rtn"]
    steps[0] = {"method": "quarot"}
    with pytest.raises(ValueError, match="wraps the o linears"):
        Recipe.model_validate(_recipe(steps=steps))


def test_python_construction_and_yaml_round_trip() -> None:
    recipe = Recipe(
        name="mine",
        calibration=CalibrationSpec(builder="mcs", params={"num_samples": 4, "seq_len": 32}),
        scheme=Scheme(weights=WeightScheme(bits=3, group_size=32), activations=16),
        steps=[Step(method="awq", params={"n_grid": 4}), Step(method="gptq", params={"block_size": 32})],
        ignore=["re:.*down_proj"],
        seed=7,
    )
    text = recipe.to_yaml()
    assert "method: awq" in text and "n_grid: 4" in text
    again = Recipe.from_yaml(text)
    assert again == recipe
    assert again.quantizer.config().block_size == 32
    assert again.steps_in("block_transform")[0].config().n_grid == 4


def test_step_configs_are_the_library_objects_with_the_recipe_seed() -> None:
    recipe = load_recipe("dllmquant")
    quarot = recipe.steps_in("global")[0].config(seed=11)
    assert quarot.seed == 11
    iaaq = recipe.steps_in("act_calibration")[0].config(act_bits=4)
    assert iaaq.vquant.bits == 4 and iaaq.alphas == (1.0, 0.8)
    assert recipe.steps_in("activations")[0].config(act_bits=4).bits == 4


def test_calibration_samples_override() -> None:
    recipe = load_recipe("gptq").with_calibration_samples(16)
    assert recipe.calibration.params["num_samples"] == 16
    assert recipe.calibration.params["seq_len"] == 128
    from_file = CalibrationSpec(path="states.jsonl").with_samples(5)
    assert from_file.limit == 5
    with pytest.raises(ValueError, match=">= 1"):
        load_recipe("gptq").with_calibration_samples(0)


def test_load_recipe_from_a_file_and_missing_names(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(load_recipe("awq").to_yaml().replace("name: awq", "name: my-awq"))
    assert load_recipe(path).name == "my-awq"
    with pytest.raises(FileNotFoundError, match="shipped recipes: awq"):
        load_recipe("no-such-recipe")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_recipe(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(ValueError, match="a recipe is a mapping"):
        load_recipe(bad)
