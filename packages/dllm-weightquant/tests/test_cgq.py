"""CGQ: GPTQ on the certainty-weighted Hessian; uniform token weights give GPTQ exactly."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from dllm_calib import (
    CalibrationSet,
    CalibrationState,
    CertaintyWeight,
    HessianCollector,
    ModelFeed,
    Provenance,
    UniformWeight,
    collect,
)
from dllm_kernels import QuantSpec
from dllm_weightquant import (
    CGQConfig,
    GPTQConfig,
    cgq_quantize,
    gptq_quantize,
    hessian_from_inputs,
    layer_objective,
    rtn_quantize,
)
from hypothesis import given
from hypothesis import strategies as st

Layer = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@given(seed=st.integers(0, 2**31 - 1), weight=st.sampled_from([1.0, 4.0, 0.25]), sym=st.booleans())
def test_uniform_token_weights_give_gptq_exactly(layer: Layer, seed: int, weight: float, sym: bool) -> None:
    w, x, _ = layer(16, 32, seed)
    spec = QuantSpec(4, sym, "group", 8)
    gptq_cfg = GPTQConfig(compute_dtype="float64")
    h_plain = hessian_from_inputs(x)
    h_uniform = hessian_from_inputs(x, torch.full((x.shape[0],), weight))  # powers of two: exact scaling
    got = cgq_quantize(w, h_uniform, spec, CGQConfig(gptq=gptq_cfg))
    want = gptq_quantize(w, h_plain, spec, gptq_cfg)
    assert torch.equal(got.codes, want.codes)
    assert torch.equal(got.scale, want.scale)


def test_weighting_reduces_the_weighted_objective(layer: Layer) -> None:
    """Quantizing against the weighted Hessian is better on the weighted objective than plain GPTQ."""
    w, x, _ = layer(32, 64, 1)
    c = torch.ones(x.shape[0], dtype=torch.float64)
    c[: x.shape[0] // 8] = 50.0  # a few heavily weighted ("masked, confident") tokens
    x[: x.shape[0] // 8] = x[: x.shape[0] // 8] @ torch.randn(
        64, 64, generator=torch.Generator().manual_seed(2)
    )
    h_weighted = hessian_from_inputs(x, c)
    spec = QuantSpec(3, True, "group", 16)
    cgq = layer_objective(w, cgq_quantize(w, h_weighted, spec).dequantize(), h_weighted)
    plain = layer_objective(w, gptq_quantize(w, hessian_from_inputs(x), spec).dequantize(), h_weighted)
    assert cgq < plain


def test_config_names_the_calib_weighting() -> None:
    cfg = CGQConfig(masked=1.0, unmasked=0.7, confidence_exponent=0.5)
    weighting = cfg.weighting()
    assert isinstance(weighting, CertaintyWeight)
    assert (weighting.masked, weighting.unmasked, weighting.confidence_exponent, weighting.form) == (
        1.0,
        0.7,
        0.5,
        "survey",
    )
    assert CGQConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="form"):
        CGQConfig(form="quadratic")
    with pytest.raises(ValueError, match="gptq"):
        CGQConfig(gptq={"block_size": 4})  # type: ignore[arg-type]


def _calibration_set(vocab: int, mask_id: int, n: int = 6, length: int = 24) -> CalibrationSet:
    """Random states at increasing mask ratios with random confidences."""
    g = torch.Generator().manual_seed(0)
    states = []
    for i in range(n):
        ids = torch.randint(0, vocab - 4, (length,), generator=g)
        masked = torch.rand(length, generator=g) < (i + 1) / (n + 1)
        ids[masked] = mask_id
        conf = torch.rand(length, generator=g)
        states.append(
            CalibrationState(
                input_ids=ids,
                attention_mask=torch.ones(length, dtype=torch.bool),
                is_masked=masked,
                mask_ratio=float(masked.float().mean()),
                t=float(masked.float().mean()),
                confidence=conf,
            )
        )
    return CalibrationSet(states, Provenance(builder="test"), mask_token_id=mask_id)


def test_cgq_through_the_calib_collector(tiny_dlm: Callable) -> None:
    """End to end with dllm_calib: the Hessian of ``CGQConfig.weighting()``; indicator 1/1 without a
    confidence term is the uniform Hessian, so CGQ reproduces GPTQ."""
    dlm = tiny_dlm("dream")
    name = dlm.topology.block(1).names["down"]
    calib = _calibration_set(dlm.vocab_size, dlm.mask_token_id)
    uniform_cfg = CGQConfig(masked=1.0, unmasked=1.0, confidence_exponent=None)
    collectors = [
        HessianCollector(UniformWeight(), dtype=torch.float64, name="plain"),
        HessianCollector(uniform_cfg.weighting(), dtype=torch.float64, name="flat"),
        HessianCollector(CGQConfig().weighting(), dtype=torch.float64, name="cgq"),
    ]
    stats = collect(ModelFeed(dlm, calib), [name], collectors)
    h_plain, h_flat, h_cgq = (stats[k][name].hessian() for k in ("plain", "flat", "cgq"))
    w = dlm.model.get_submodule(name).weight.detach()
    spec = QuantSpec(4, True, "group", 16)
    gptq = gptq_quantize(w, h_plain, spec, GPTQConfig(compute_dtype="float64"))
    flat = cgq_quantize(w, h_flat, spec, CGQConfig(gptq=GPTQConfig(compute_dtype="float64")))
    assert torch.equal(flat.codes, gptq.codes)
    assert not torch.allclose(h_cgq, h_plain)
    cgq = cgq_quantize(w, h_cgq, spec)
    rtn = rtn_quantize(w, None, spec)
    assert layer_objective(w, cgq.dequantize(), h_cgq) < layer_objective(w, rtn.dequantize(), h_cgq)
