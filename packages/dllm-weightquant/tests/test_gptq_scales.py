"""GPTQ's scale policies: each beats RTN on its own grid, static scales are RTN's, and the quantized weight
dequantizes to exactly the values the sweep compensated against."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from dllm_kernels import QuantSpec
from dllm_weightquant import (
    CGQConfig,
    ClipSearch,
    GPTQConfig,
    RTNConfig,
    cgq_quantize,
    gptq_quantize,
    layer_objective,
    rtn_quantize,
)
from dllm_weightquant.gptq import SCALE_POLICIES, gptq_sweep
from hypothesis import given
from hypothesis import strategies as st

Layer = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

specs = st.builds(
    lambda bits, sym, gran: QuantSpec(bits, sym, gran, 16 if gran == "group" else None),
    st.sampled_from([2, 3, 4, 8]),
    st.booleans(),
    st.sampled_from(["channel", "group", "tensor"]),
)


def rtn_on_the_same_grid(w: torch.Tensor, spec: QuantSpec, config: GPTQConfig) -> torch.Tensor:
    """RTN with the scale search of ``config`` (min/max, or ``clip``'s search), dequantized."""
    return rtn_quantize(w, None, spec, RTNConfig(clip=config.search())).dequantize()


@given(
    spec=specs,
    seed=st.integers(0, 2**31 - 1),
    actorder=st.sampled_from(["static", None]),
    scales=st.sampled_from(SCALE_POLICIES),
)
def test_every_policy_beats_rtn_on_its_grid(
    layer: Layer, spec: QuantSpec, seed: int, actorder: str | None, scales: str
) -> None:
    w, _, h = layer(24, 64, seed)
    config = GPTQConfig(
        actorder=actorder, scales=scales, clip=ClipSearch(grid=20) if scales != "static" else None
    )
    gptq = layer_objective(w, gptq_quantize(w, h, spec, config).dequantize(), h)
    assert gptq <= layer_objective(w, rtn_on_the_same_grid(w, spec, config), h)


@given(
    spec=specs,
    seed=st.integers(0, 2**31 - 1),
    actorder=st.sampled_from(["static", None]),
    scales=st.sampled_from(["static", "mse"]),
)
def test_static_scales_are_the_rtn_scales_of_the_original_weights(
    layer: Layer, spec: QuantSpec, seed: int, actorder: str | None, scales: str
) -> None:
    w, _, h = layer(8, 32, seed)
    config = GPTQConfig(actorder=actorder, scales=scales)
    got = gptq_quantize(w, h, spec, config)
    want = rtn_quantize(w, None, spec, RTNConfig(clip=config.search()))
    assert torch.equal(got.scale, want.scale)
    assert (got.zero is None) == (want.zero is None)
    if got.zero is not None:
        assert torch.equal(got.zero, want.zero)


def test_policies_differ_only_with_groups(layer: Layer) -> None:
    """Per channel the one scale group starts before any update: dynamic and static give the same result."""
    w, _, h = layer(16, 64, 11)
    spec = QuantSpec(3, False, "channel")
    static = gptq_quantize(w, h, spec, GPTQConfig(scales="static"))
    dynamic = gptq_quantize(w, h, spec, GPTQConfig(scales="dynamic"))
    assert torch.equal(static.codes, dynamic.codes) and torch.equal(static.scale, dynamic.scale)
    grouped = QuantSpec(3, False, "group", 16)
    assert not torch.equal(
        gptq_quantize(w, h, grouped, GPTQConfig(scales="static")).scale,
        gptq_quantize(w, h, grouped, GPTQConfig(scales="dynamic")).scale,
    )


@given(
    spec=specs,
    seed=st.integers(0, 2**31 - 1),
    scales=st.sampled_from(SCALE_POLICIES),
    dtype=st.sampled_from(["float32", "float64"]),
    block=st.sampled_from([7, 128]),
)
def test_dequantized_weight_is_what_the_sweep_produced(
    layer: Layer, spec: QuantSpec, seed: int, scales: str, dtype: str, block: int
) -> None:
    w, _, h = layer(8, 32, seed)
    config = GPTQConfig(block_size=block, scales=scales, compute_dtype=dtype)
    quantized, values = gptq_sweep(w, h, spec, config)
    assert values.dtype == (torch.float64 if dtype == "float64" else torch.float32)
    assert torch.equal(quantized.dequantize().to(values.dtype), values)
    assert torch.equal(gptq_quantize(w, h, spec, config).codes, quantized.codes)


def test_the_rtn_fallback_reports_its_values(layer: Layer) -> None:
    w, _, _ = layer(8, 16, 7)
    spec = QuantSpec(4, True, "group", 8)
    with pytest.warns(RuntimeWarning, match="falling back to RTN"):
        quantized, values = gptq_sweep(
            w, -torch.eye(16, dtype=torch.float64), spec, GPTQConfig(damp_retries=0)
        )
    assert torch.equal(quantized.dequantize(), values)


@pytest.mark.parametrize("scales", SCALE_POLICIES)
def test_cgq_takes_the_policy(layer: Layer, scales: str) -> None:
    w, _, h = layer(8, 32, 12)
    spec = QuantSpec(3, True, "group", 8)
    gptq = GPTQConfig(scales=scales)
    assert torch.equal(
        cgq_quantize(w, h, spec, CGQConfig(gptq=gptq)).codes, gptq_quantize(w, h, spec, gptq).codes
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scales": "lazy"}, "scales"),
        ({"scales": "static", "clip": ClipSearch()}, "set scales: mse"),
    ],
)
def test_policy_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GPTQConfig(**kwargs)


def test_recipe_dicts_name_the_policy() -> None:
    config = GPTQConfig.from_dict({"scales": "mse", "clip": {"grid": 50, "norm": 2.4}})
    assert config.search() == ClipSearch(grid=50, norm=2.4)
    assert GPTQConfig.from_dict(config.to_dict()) == config
    assert GPTQConfig(scales="mse").search() == ClipSearch()
    assert GPTQConfig(scales="static").search() is None
