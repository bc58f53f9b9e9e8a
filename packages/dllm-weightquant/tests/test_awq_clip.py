"""AWQ's clip search (llm-awq's auto_clip): per (row, group) bounds against the group's output error."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from dllm_kernels import QuantSpec
from dllm_weightquant import AWQConfig, awq_search_clip, fake_quantize_weight
from dllm_weightquant.awq_clip import apply_clip, clip_ratios
from hypothesis import given
from hypothesis import strategies as st

Layer = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

SPECS = [
    QuantSpec(4, False, "group", 16),
    QuantSpec(3, True, "group", 16),
    QuantSpec(4, True, "channel"),
    QuantSpec(2, False, "group", 32),
]


def _group_objective(
    w: torch.Tensor, clamped: torch.Tensor, x: torch.Tensor, spec: QuantSpec
) -> torch.Tensor:
    """llm-awq's objective on all tokens: ``mean_t (x_t[g] . (Q(clamped) - w)[r, g])^2`` per (row, group)."""
    group = spec.group_size if spec.granularity == "group" else w.shape[1]
    n = w.shape[1] // group
    e = (fake_quantize_weight(clamped.float(), spec).double() - w.double()).reshape(w.shape[0], n, group)
    xs = x.double().reshape(x.shape[0], n, group)
    return torch.einsum("tng,rng->trn", xs, e).pow(2).mean(0)


def test_ratios_are_llm_awqs() -> None:
    assert clip_ratios(20, 0.5) == pytest.approx([1 - k / 20 for k in range(10)])
    assert clip_ratios(20, 0.0) == [1.0]


@given(seed=st.integers(0, 2**31 - 1), spec=st.sampled_from(SPECS), grid=st.sampled_from([5, 20]))
def test_chosen_clip_is_never_worse_than_no_clip(layer: Layer, seed: int, spec: QuantSpec, grid: int) -> None:
    w, x, h = layer(24, 64, seed)
    res = awq_search_clip(w, h, spec, n_grid=grid, max_shrink=0.5)
    n = 64 // spec.group_size if spec.granularity == "group" else 1
    assert res.max_val.shape == res.ratio.shape == (24, n)
    assert res.error <= res.baseline_error
    # per (row, group), the chosen bound's objective is at most the unclipped one
    clamped = w.clone()
    apply_clip(clamped, res)
    chosen = _group_objective(w, clamped, x, spec)
    base = _group_objective(w, w, x, spec)
    assert bool((chosen <= base * (1 + 1e-9) + 1e-12).all())
    assert float(chosen.sum()) == pytest.approx(res.error, rel=1e-6)
    assert float(base.sum()) == pytest.approx(res.baseline_error, rel=1e-6)
    allowed = torch.tensor(clip_ratios(grid, 0.5), dtype=torch.float32)
    assert bool(torch.isclose(res.ratio[..., None], allowed).any(-1).all())


def test_clip_helps_on_outlier_weights(layer: Layer) -> None:
    w, _, h = layer(32, 64, 3)
    w[:, ::16] *= 6.0  # one large weight per group widens the grid for the rest
    spec = QuantSpec(3, False, "group", 16)
    res = awq_search_clip(w, h, spec)
    assert res.error < 0.95 * res.baseline_error
    assert float(res.ratio.min()) < 1.0
    clamped = w.clone()
    apply_clip(clamped, res)
    assert bool(torch.isfinite(clamped).all())
    cells = clamped.reshape(32, 4, 16).abs().amax(-1)
    assert bool((cells <= res.max_val * (1 + 1e-6)).all())
    untouched = res.ratio == 1.0
    assert torch.equal(clamped.reshape(32, 4, 16)[untouched], w.reshape(32, 4, 16)[untouched])


def test_clip_rejects_tensor_granularity_and_bad_inputs(layer: Layer) -> None:
    w, _, h = layer(8, 32, 0)
    with pytest.raises(ValueError, match="granularity 'tensor'"):
        awq_search_clip(w, h, QuantSpec(4, True, "tensor"))
    with pytest.raises(ValueError, match=r"hessian must have shape \[32, 32\]"):
        awq_search_clip(w, h[:16, :16], QuantSpec(4, True, "group", 16))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"clip": 1}, "AWQConfig.clip must be a bool"),
        ({"clip_n_grid": 0}, "AWQConfig.clip_n_grid must be a positive integer"),
        ({"clip_max_shrink": 1.0}, r"AWQConfig.clip_max_shrink must be a number in \[0.0, 1.0\)"),
        ({"clip_skip": ("q", "qkv")}, r"AWQConfig.clip_skip must be one of \['q', 'k', 'v'"),
        ({"clip_skip": "q"}, "AWQConfig.clip_skip must be a tuple"),
    ],
)
def test_clip_config_errors_name_the_field(params: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        AWQConfig(**params)


def test_clip_config_defaults_are_llm_awqs() -> None:
    c = AWQConfig()
    assert (c.clip, c.clip_n_grid, c.clip_max_shrink, c.clip_skip) == (False, 20, 0.5, ("q", "k"))
    assert AWQConfig.from_dict({"clip": True, "clip_skip": ["q", "k", "v"]}).clip_skip == ("q", "k", "v")
