"""The registry's declarations are honest: every statistic a run collects is one that a step of its plan
declares in ``needs`` (collector class, linear roles, input or output), and every declared one is
collected."""

from __future__ import annotations

import pytest
from dllm_bench.pipeline import quantize_model
from dllm_bench.recipes import Recipe, load_recipe
from dllm_calib.collectors import driver
from dllm_sampler import DiffusionLM
from dllm_sampler.testing import random_char_model

SMALL_CALIBRATION = {"builder": "random", "params": {"num_samples": 4, "seq_len": 16}, "batch_size": 2}


def _role_of(dlm: DiffusionLM) -> dict[str, str]:
    """Module name (a topology name, through any ``.inner`` wrappers) -> its linear role."""
    roles = {}
    for block in dlm.topology:
        for role in ("q", "k", "v", "o", "gate", "up", "down"):
            name = block.names[role]
            for depth in range(4):
                roles[name + ".inner" * depth] = role
    return roles


@pytest.mark.parametrize(
    ("name", "scheme", "steps"),
    [
        ("gptq", "W4A16g16", None),
        ("awq", "W4A16g16", None),
        ("awq", "W4A16g16", [{"method": "awq", "loss": "auto", "clip": True}, {"method": "rtn"}]),
        (
            "awq",
            "W4A16g16",
            [{"method": "awq", "groups": ["vo"], "clip": True, "clip_skip": []}, {"method": "gptq"}],
        ),
        ("smoothquant", "W8A8", None),
        ("duquant", "W4A4", [{"method": "duquant", "max_rotation_step": 4}, {"method": "rtn"}]),
        ("dllmquant", "W4A4", None),
        ("quant-dllm", "W2A16g16", None),
    ],
)
def test_collected_statistics_are_the_declared_ones(monkeypatch, name: str, scheme: str, steps) -> None:
    dlm = random_char_model("dream")
    data = load_recipe(name).with_scheme(scheme).to_dict()
    data["calibration"] = SMALL_CALIBRATION
    if steps is not None:
        data["steps"] = steps
    recipe = Recipe.model_validate(data)
    declared = {
        (s.collector.__name__, role, s.kind)
        for method, config in recipe.plan()
        for s in method.needs(config).statistics
        for role in s.roles
    }
    seen: set[tuple[str, str, str]] = set()
    attach = driver.attach_collectors
    roles = _role_of(dlm)

    def spy(feed, collectors, targets):
        for collector in collectors:
            for point in collector.hook_points(targets):
                seen.add((type(collector).__name__, roles[point.module], point.kind))
        return attach(feed, collectors, targets)

    monkeypatch.setattr(driver, "attach_collectors", spy)
    quantize_model(dlm, recipe, progress=False)
    assert seen == declared
