"""Adding a method touches only the method's own code: two toy methods registered here run through
``dllmq quantize`` with a recipe that names them, with no line of ``dllm_bench`` knowing them."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from dllm_bench.cli import main
from dllm_bench.loading import load_any
from dllm_calib import (
    InputSampleCollector,
    LogRow,
    Method,
    MethodConfig,
    MethodContext,
    Needs,
    Stage,
    Statistic,
    check_range,
    collect,
    registered,
)
from dllm_kernels import QuantSpec
from dllm_sampler import load, save
from dllm_sampler.testing import random_char_model
from dllm_weightquant import QuantizedWeight, quantizer_method, rtn_quantize
from torch import Tensor


@dataclass(frozen=True)
class ClipConfig(MethodConfig):
    """Round to nearest after clipping every row at ``ratio`` times its largest magnitude."""

    ratio: float = 0.9

    def validate(self) -> None:
        check_range("ClipConfig", "ratio", self.ratio, 0.0, 1.0, lo_open=True)


def clip_rtn(weight: Tensor, hessian: Tensor | None, spec: QuantSpec, config: ClipConfig) -> QuantizedWeight:
    bound = config.ratio * weight.abs().amax(dim=1, keepdim=True)
    return rtn_quantize(torch.maximum(torch.minimum(weight, bound), -bound), None, spec)


@dataclass(frozen=True)
class ScaleConfig(MethodConfig):
    """Multiply every attention norm by ``factor`` and divide q/k/v's columns by it: the float model is
    unchanged (with the default factor 1 exactly)."""

    factor: float = 1.0


SEEN_BLOCKS: list[tuple[int, int]] = []
"""(block, sampled input rows) per block the toy transform collected statistics on."""


def scale_attention_norms(context: MethodContext, config: ScaleConfig) -> list[LogRow]:
    for index, feed in context.feeds():
        block = context.dlm.topology.block(index)
        rows = collect(feed, [block.names["q"]], [InputSampleCollector(8)])["inputs"][block.names["q"]]
        SEEN_BLOCKS.append((index, rows.samples.shape[0]))
        context.dlm.topology.fold_norm_scale(block, "attn", 1.0 / config.factor)
    return [LogRow(-1, "*", "toy_scale")]


TOY_QUANTIZER = quantizer_method(
    "toy_clip_rtn", ClipConfig, clip_rtn, "RTN after a row clip", needs_hessian=False
)
TOY_TRANSFORM = Method(
    name="toy_scale",
    stage=Stage.GLOBAL,
    config_cls=ScaleConfig,
    apply=scale_attention_norms,
    summary="scales the attention norms (a no-op transform)",
    needs=lambda config: Needs(statistics=(Statistic(InputSampleCollector, ("q",)),)),
)

RECIPE = """\
name: toy
calibration: {builder: random, params: {num_samples: 4, seq_len: 16}, batch_size: 2}
scheme: {weights: {bits: 4, symmetric: true, granularity: group, group_size: 16}, activations: 16}
steps:
  - {method: toy_scale}
  - {method: toy_clip_rtn, ratio: 0.8}
"""


@pytest.fixture
def toy_methods() -> object:
    SEEN_BLOCKS.clear()
    with registered(TOY_QUANTIZER), registered(TOY_TRANSFORM):
        yield


def test_toy_methods_run_through_dllmq_quantize(toy_methods, tmp_path: Path, capsys) -> None:
    save(random_char_model("llada"), tmp_path / "float")
    (tmp_path / "toy.yaml").write_text(RECIPE, encoding="utf-8")
    out = tmp_path / "q"
    argv = ["quantize", "--model", str(tmp_path / "float"), "--recipe", str(tmp_path / "toy.yaml")]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    assert "recipe 'toy' at W4A16g16" in capsys.readouterr().out

    assert SEEN_BLOCKS == [(0, 8), (1, 8)]  # the global stage fed every block its float inputs
    float_model = load(tmp_path / "float")
    quantized = load_any(out)
    spec = QuantSpec(4, True, "group", 16)
    for name in float_model.topology.linear_names():
        expected = clip_rtn(float_model.model.get_submodule(name).weight, None, spec, ClipConfig(0.8))
        got = quantized.model.get_submodule(name).qweight.dequantize()
        assert torch.equal(got, expected.dequantize()), name
    with open(out / "quant_log.csv", newline="") as fh:
        methods = [row["method"] for row in csv.DictReader(fh)]
    assert methods == ["toy_scale"] + ["toy_clip_rtn"] * 14


def test_a_recipe_naming_an_unregistered_method_fails_with_the_registered_names(
    tmp_path: Path, capsys
) -> None:
    (tmp_path / "toy.yaml").write_text(RECIPE, encoding="utf-8")
    assert main(["quantize", "--recipe", str(tmp_path / "toy.yaml"), "--out", str(tmp_path / "q")]) == 2
    error = capsys.readouterr().err
    assert "unknown method 'toy_scale'" in error and "gptq" in error


def test_dllmq_methods_lists_the_registry(toy_methods, capsys) -> None:
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    for name in ("quarot", "awq", "iaaq", "gptq", "act_quant", "toy_scale", "toy_clip_rtn"):
        assert name in listing
    assert listing.index("toy_scale") < listing.index("awq") < listing.index("gptq")  # stage order
    assert "HessianCollector(input of q, k, v, o, gate, up, down)" in listing
