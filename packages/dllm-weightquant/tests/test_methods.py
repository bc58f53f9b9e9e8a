"""Method registry and config round trips."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from dllm_kernels import QuantSpec
from dllm_weightquant import (
    METHODS,
    ABMPConfig,
    ClipSearch,
    DAQConfig,
    GPTQConfig,
    MultiBinaryWeight,
    QuantizedWeight,
    RTNConfig,
    get_method,
)

Layer = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def test_registry_names_and_kinds() -> None:
    assert set(METHODS) == {"rtn", "gptq", "cgq", "awq", "daq", "abmp"}
    assert get_method("GPTQ") is METHODS["gptq"]
    assert METHODS["awq"].kind == "transform"
    assert {m.name for m in METHODS.values() if m.kind == "quantizer"} == {
        "rtn",
        "gptq",
        "cgq",
        "daq",
        "abmp",
    }
    with pytest.raises(KeyError, match="known"):
        get_method("smoothquant")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_config_round_trip_through_json(name: str) -> None:
    cls = METHODS[name].config_cls
    default = cls()
    assert cls.from_dict(json.loads(json.dumps(default.to_dict()))) == default
    with pytest.raises(ValueError, match="unknown keys"):
        cls.from_dict({"not_a_field": 1})


def test_nested_configs_round_trip() -> None:
    cfg = GPTQConfig(block_size=64, actorder=None, clip=ClipSearch(grid=50))
    assert GPTQConfig.from_dict(cfg.to_dict()) == cfg
    assert RTNConfig.from_dict({"clip": {"grid": 10}}).clip == ClipSearch(grid=10)
    abmp = ABMPConfig(rho=0.1, daq=DAQConfig(iterations=3))
    assert ABMPConfig.from_dict(json.loads(json.dumps(abmp.to_dict()))) == abmp


@pytest.mark.parametrize("name", ["rtn", "gptq", "cgq", "daq", "abmp"])
def test_every_quantizer_has_the_common_signature(layer: Layer, name: str) -> None:
    method = METHODS[name]
    w, _, h = layer(8, 64, 0)
    spec = QuantSpec(2, True, "group", 16)
    q = method.fn(w, h if method.needs_hessian else None, spec, method.config_cls())
    assert isinstance(q, QuantizedWeight | MultiBinaryWeight)
    assert q.shape == (8, 64) and bool(torch.isfinite(q.dequantize()).all())
