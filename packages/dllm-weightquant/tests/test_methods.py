"""The weight methods in dllm_calib's registry, and config round trips."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from dllm_calib import RoutedHessianCollector, Stage, get_method, registered_methods
from dllm_kernels import QuantSpec
from dllm_weightquant import (
    ABMPConfig,
    AWQConfig,
    CGQConfig,
    ClipSearch,
    DAQConfig,
    GPTQConfig,
    MultiBinaryWeight,
    QuantizedWeight,
    RTNConfig,
    abmp_quantize,
    cgq_quantize,
    daq_quantize,
    gptq_quantize,
    rtn_quantize,
)

Layer = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

WEIGHT_METHODS = {
    "rtn": (Stage.QUANTIZER, RTNConfig),
    "gptq": (Stage.QUANTIZER, GPTQConfig),
    "cgq": (Stage.QUANTIZER, CGQConfig),
    "daq": (Stage.QUANTIZER, DAQConfig),
    "abmp": (Stage.QUANTIZER, ABMPConfig),
    "awq": (Stage.BLOCK_TRANSFORM, AWQConfig),
}
QUANTIZERS = {
    "rtn": rtn_quantize,
    "gptq": gptq_quantize,
    "cgq": cgq_quantize,
    "daq": daq_quantize,
    "abmp": abmp_quantize,
}


def test_weight_methods_are_registered_with_stage_and_config() -> None:
    assert set(WEIGHT_METHODS) <= set(registered_methods())
    for name, (stage, config_cls) in WEIGHT_METHODS.items():
        method = get_method(name.upper())
        assert (method.name, method.stage, method.config_cls) == (name, stage, config_cls)
    with pytest.raises(ValueError, match="registered methods"):
        get_method("frobnicate")


def test_needs_state_the_statistics_each_method_reads() -> None:
    assert not get_method("rtn").needs(RTNConfig()).calibration
    gptq = get_method("gptq").needs(GPTQConfig())
    assert [(s.collector, s.roles) for s in gptq.statistics] == [
        (RoutedHessianCollector, ("q", "k", "v", "o", "gate", "up", "down"))
    ]
    assert not gptq.confidence
    cgq = get_method("cgq")
    assert cgq.needs(CGQConfig()).confidence
    assert not cgq.needs(CGQConfig(confidence_exponent=None)).confidence
    awq = get_method("awq").needs(AWQConfig(groups=("attn", "down")))
    assert {s.roles for s in awq.statistics} == {("q", "down")}
    assert awq.plain == {"q", "k", "v", "up", "down"}


@pytest.mark.parametrize(
    ("name", "fits", "misfits"),
    [
        ("daq", QuantSpec(4, True, "channel"), QuantSpec(8, True, "group", 128)),
        ("daq", QuantSpec(2, True, "group", 128), QuantSpec(2, False, "group", 128)),
        ("abmp", QuantSpec(3, True, "group", 128), QuantSpec(4, True, "group", 128)),
        ("abmp", QuantSpec(2, True, "group", 128), QuantSpec(2, True, "channel")),
    ],
)
def test_multibinary_spec_limits_live_in_the_method_check(
    name: str, fits: QuantSpec, misfits: QuantSpec
) -> None:
    method = get_method(name)
    config = method.config_cls()
    method.check(config, fits, None)
    with pytest.raises(ValueError, match=name.upper()):
        method.check(config, misfits, None)


@pytest.mark.parametrize("name", sorted(WEIGHT_METHODS))
def test_config_round_trip_through_json(name: str) -> None:
    cls = get_method(name).config_cls
    default = cls()
    assert cls.from_dict(json.loads(json.dumps(default.to_dict()))) == default
    with pytest.raises(ValueError, match="unknown keys"):
        cls.from_dict({"not_a_field": 1})


def test_nested_configs_round_trip_and_are_type_checked() -> None:
    cfg = GPTQConfig(block_size=64, actorder=None, clip=ClipSearch(grid=50))
    assert GPTQConfig.from_dict(cfg.to_dict()) == cfg
    assert RTNConfig.from_dict({"clip": {"grid": 10}}).clip == ClipSearch(grid=10)
    abmp = ABMPConfig(rho=0.1, daq=DAQConfig(iterations=3))
    assert ABMPConfig.from_dict(json.loads(json.dumps(abmp.to_dict()))) == abmp
    with pytest.raises(ValueError, match=r"CGQConfig\.gptq must be a GPTQConfig"):
        CGQConfig(gptq=DAQConfig())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"RTNConfig\.clip must be a ClipSearch"):
        RTNConfig(clip=0.9)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_every_quantizer_has_the_common_signature(layer: Layer, name: str) -> None:
    fn = QUANTIZERS[name]
    w, _, h = layer(8, 64, 0)
    spec = QuantSpec(2, True, "group", 16)
    q = fn(w, None if name == "rtn" else h, spec, WEIGHT_METHODS[name][1]())
    assert isinstance(q, QuantizedWeight | MultiBinaryWeight)
    assert q.shape == (8, 64) and bool(torch.isfinite(q.dequantize()).all())
