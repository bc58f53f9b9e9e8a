"""The method registry: records, registration, configs bound from recipe parameters, plugins."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from dllm_calib import (
    BindContext,
    HessianCollector,
    LogRow,
    Method,
    MethodConfig,
    Needs,
    Stage,
    Statistic,
    check_range,
    get_method,
    register_method,
    registered,
    registered_methods,
    unregister_method,
)
from dllm_calib.methods import registry


@dataclass(frozen=True)
class InnerConfig(MethodConfig):
    width: int = 2


@dataclass(frozen=True)
class ToyConfig(MethodConfig):
    alpha: float = 0.5
    inner: InnerConfig = InnerConfig()
    sizes: tuple[int, ...] = (1, 2)
    seed: int = 0

    def validate(self) -> None:
        check_range("ToyConfig", "alpha", self.alpha, 0.0, 1.0)


def _apply(context: object, config: ToyConfig) -> list[LogRow]:
    return []


def _toy(name: str = "toy_method", **changes: object) -> Method:
    return Method(name=name, stage=Stage.BLOCK_TRANSFORM, config_cls=ToyConfig, apply=_apply, **changes)


def test_stages_run_in_declaration_order() -> None:
    assert [s.value for s in sorted(Stage, key=lambda s: s.rank)] == [
        "global",
        "block_transform",
        "act_calibration",
        "quantizer",
        "activations",
    ]


def test_register_get_and_unregister() -> None:
    method = _toy()
    with registered(method):
        assert get_method("TOY_METHOD") is method
        assert "toy_method" in registered_methods()
        register_method(method)  # the same record again is fine
        with pytest.raises(ValueError, match="already registered"):
            register_method(_toy(summary="another"))
        register_method(_toy(summary="another"), replace=True)
        assert get_method("toy_method").summary == "another"
    assert "toy_method" not in registered_methods()
    with pytest.raises(ValueError, match="unknown method 'toy_method'; registered methods"):
        get_method("toy_method")
    with pytest.raises(KeyError):
        unregister_method("toy_method")


def test_records_are_validated() -> None:
    with pytest.raises(ValueError, match="lower-case"):
        _toy("Toy-Method")
    with pytest.raises(ValueError, match="MethodConfig"):
        Method(name="x", stage=Stage.QUANTIZER, config_cls=dict, apply=_apply)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="activation_only"):
        _toy(scheme_default=True)
    with pytest.raises(ValueError, match="roles"):
        Statistic(HessianCollector, ("qkv",))
    with pytest.raises(ValueError, match="kind"):
        Statistic(HessianCollector, ("q",), "weights")


def test_configure_binds_params_and_the_recipe_seed() -> None:
    method = _toy()
    config = method.configure({"alpha": 0.25, "inner": {"width": 4}, "sizes": [3]}, BindContext(seed=7))
    assert config == ToyConfig(alpha=0.25, inner=InnerConfig(4), sizes=(3,), seed=7)
    assert method.configure({"seed": 1}, BindContext(seed=7)).seed == 1
    with pytest.raises(ValueError, match=r"step 'toy_method': .*unknown keys \['beta'\]"):
        method.configure({"beta": 1})
    with pytest.raises(ValueError, match=r"step 'toy_method': ToyConfig\.alpha must be a number in"):
        method.configure({"alpha": 2.0})
    with pytest.raises(ValueError, match="must be a mapping"):
        method.configure([1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"ToyConfig\.inner must be a InnerConfig"):
        ToyConfig(inner=3)  # type: ignore[arg-type]
    assert ToyConfig().to_dict() == {"alpha": 0.5, "inner": {"width": 2}, "sizes": [1, 2], "seed": 0}


def test_needs_say_whether_calibration_is_read() -> None:
    assert not Needs().calibration
    assert Needs(confidence=True).calibration
    assert Needs(statistics=(Statistic(HessianCollector, ("q", "k")),)).calibration
    assert Statistic(HessianCollector, ("q", "k")).describe() == "HessianCollector(input of q, k)"


def test_a_broken_plugin_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise ImportError("no module named 'missing_dep'")

    point = SimpleNamespace(name="broken", value="broken_pkg.methods", load=fail)
    monkeypatch.setattr(registry, "entry_points", lambda group: [point])
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    with pytest.raises(
        RuntimeError, match=r"method plugin 'broken' \(broken_pkg\.methods\) failed to import"
    ):
        registered_methods()
