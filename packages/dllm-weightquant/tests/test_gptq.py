"""GPTQ: objective vs RTN, agreement with a plain dense implementation, act-order, dead inputs, damping,
fallback, and input validation."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from dllm_kernels import QuantSpec, torch_grid
from dllm_weightquant import ClipSearch, GPTQConfig, RTNConfig, gptq_quantize, layer_objective, rtn_quantize
from dllm_weightquant.gptq import SCALE_POLICIES
from dllm_weightquant.grid import search_params
from hypothesis import given
from hypothesis import strategies as st

Layer = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def dense_gptq(
    w: torch.Tensor,
    h: torch.Tensor,
    spec: QuantSpec,
    damp_percent: float,
    actorder: bool,
    scales: str = "dynamic",
    clip: ClipSearch | None = None,
) -> torch.Tensor:
    """Textbook GPTQ/OBS, written plainly: after each column, update every remaining column with the full
    inverse Hessian, then drop the column from the inverse (Schur complement). float64, no blocking.
    Group scales (min/max, or ``clip``'s search) come from the group's weights when its first column is
    reached: the current ones (``scales="dynamic"``) or the original ones (otherwise). Returns codes in
    the weight storage (unsigned if asymmetric)."""
    w = w.double().clone()
    h = h.double().clone()
    n = w.shape[1]
    dead = h.diagonal() == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    original = w.clone()
    order = torch.argsort(h.diagonal(), descending=True, stable=True) if actorder else torch.arange(n)
    h = h + damp_percent * h.diagonal().mean() * torch.eye(n, dtype=torch.float64)
    hinv = torch.linalg.inv(h)
    size = spec.group_size if spec.granularity == "group" else n
    params: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    codes = torch.zeros(w.shape, dtype=torch.int16)
    remaining = order.tolist()
    for j in order.tolist():
        g = j // size
        if g not in params:
            cols = torch.arange(g * size, (g + 1) * size)
            source = w if scales == "dynamic" else original
            cells = source[:, cols].reshape(1, -1) if spec.granularity == "tensor" else source[:, cols]
            params[g] = search_params(cells, spec.bits, spec.symmetric, clip)
        s, z = params[g]
        c = torch_grid.encode(w[:, j], s, z, spec.bits)
        codes[:, j] = c.to(torch.int16)
        q = torch_grid.decode(c, s, z).double()
        err = (w[:, j] - q) / hinv[j, j]
        remaining.remove(j)
        rest = torch.tensor(remaining, dtype=torch.long)
        w[:, rest] -= err[:, None] * hinv[j, rest][None, :]
        w[:, j] = q
        hinv = hinv - torch.outer(hinv[:, j], hinv[j, :]) / hinv[j, j]
    return codes if spec.symmetric else codes + (1 << (spec.bits - 1))


gptq_specs = st.builds(
    lambda bits, sym, gran: QuantSpec(bits, sym, gran, 8 if gran == "group" else None),
    st.sampled_from([2, 3, 4]),
    st.booleans(),
    st.sampled_from(["channel", "group", "tensor"]),
)


@given(
    spec=gptq_specs,
    seed=st.integers(0, 2**31 - 1),
    actorder=st.sampled_from(["static", None]),
    block=st.sampled_from([5, 8, 128]),
    scales=st.sampled_from(SCALE_POLICIES),
)
def test_matches_dense_reference(
    layer: Layer, spec: QuantSpec, seed: int, actorder: str | None, block: int, scales: str
) -> None:
    w, _, h = layer(6, 24, seed, dtype=torch.float64)
    cfg = GPTQConfig(block_size=block, actorder=actorder, scales=scales, compute_dtype="float64")
    got = gptq_quantize(w, h, spec, cfg)
    want = dense_gptq(w, h, spec, cfg.damp_percent, actorder == "static", scales, cfg.search())
    assert torch.equal(got.codes.to(torch.int16), want)


@given(
    spec=st.builds(
        lambda bits, sym, gs: QuantSpec(bits, sym, "group" if gs else "channel", gs),
        st.sampled_from([3, 4, 8]),
        st.booleans(),
        st.sampled_from([None, 16, 32]),
    ),
    seed=st.integers(0, 2**31 - 1),
    actorder=st.sampled_from(["static", None]),
)
def test_objective_never_exceeds_rtn(layer: Layer, spec: QuantSpec, seed: int, actorder: str | None) -> None:
    w, _, h = layer(32, 64, seed)
    gptq = layer_objective(w, gptq_quantize(w, h, spec, GPTQConfig(actorder=actorder)).dequantize(), h)
    rtn = layer_objective(w, rtn_quantize(w, None, spec).dequantize(), h)
    assert gptq <= rtn


def test_objective_on_a_tiny_model_hessian() -> None:
    dllm_sampler = pytest.importorskip("dllm_sampler")
    try:
        dlm = dllm_sampler.load("tiny-llada")
    except (FileNotFoundError, OSError) as e:
        pytest.skip(f"the packaged tiny-llada model is not available yet: {e}")
    block = dlm.topology.block(0)
    captured: list[torch.Tensor] = []
    handle = block.q_proj.register_forward_hook(lambda m, i, o: captured.append(i[0].detach()))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, dlm.vocab_size - 8, (8, 64), generator=g)
    ids[torch.rand(ids.shape, generator=g) < 0.5] = dlm.mask_token_id
    with torch.no_grad():
        dlm.logits(ids)
    handle.remove()
    x = torch.cat([c.reshape(-1, c.shape[-1]) for c in captured]).double()
    h = x.T @ x / x.shape[0]
    w = block.q_proj.weight.detach().float()
    spec = QuantSpec(4, True, "group", 32) if w.shape[1] % 32 == 0 else QuantSpec(4, True, "channel")
    gptq = layer_objective(w, gptq_quantize(w, h, spec).dequantize(), h)
    assert gptq <= layer_objective(w, rtn_quantize(w, None, spec).dequantize(), h)


def test_block_size_does_not_change_the_result(layer: Layer) -> None:
    w, _, h = layer(8, 64, 3, dtype=torch.float64)
    spec = QuantSpec(4, False, "group", 16)
    ref = gptq_quantize(w, h, spec, GPTQConfig(block_size=64, compute_dtype="float64"))
    for block in (1, 7, 16, 1000):
        q = gptq_quantize(w, h, spec, GPTQConfig(block_size=block, compute_dtype="float64"))
        assert torch.equal(q.codes, ref.codes)
        assert torch.allclose(q.scale, ref.scale, rtol=1e-6, atol=0)


def test_diagonal_hessian_gives_rtn(layer: Layer) -> None:
    w, _, _ = layer(8, 32, 4)
    h = torch.diag(torch.rand(32, dtype=torch.float64) + 0.5)
    spec = QuantSpec(4, True, "group", 8)
    for config in (GPTQConfig(), GPTQConfig(scales="static")):
        rtn = rtn_quantize(w, None, spec, RTNConfig(clip=config.search()))
        assert torch.equal(gptq_quantize(w, h, spec, config).codes, rtn.codes)


def test_act_order_keeps_groups_and_helps(layer: Layer) -> None:
    spec = QuantSpec(3, True, "group", 16)
    wins = 0
    for seed in range(4):
        w, _, h = layer(32, 64, seed)
        q = gptq_quantize(w, h, spec, GPTQConfig(actorder="static"))
        assert q.g_idx is None and q.scale.shape == (32, 4)
        plain = layer_objective(w, gptq_quantize(w, h, spec, GPTQConfig(actorder=None)).dequantize(), h)
        wins += layer_objective(w, q.dequantize(), h) < plain
    assert wins >= 3


def test_dead_inputs_are_zeroed(layer: Layer) -> None:
    w, x, _ = layer(8, 32, 5)
    x[:, [3, 17]] = 0.0
    h = x.double().T @ x.double()
    q = gptq_quantize(w, h, QuantSpec(4, False, "group", 8))
    deq = q.dequantize()
    assert bool((deq[:, [3, 17]] == 0).all())
    assert bool(torch.isfinite(deq).all())


def test_failed_cholesky_raises_damping_with_a_warning(layer: Layer) -> None:
    w, _, h = layer(8, 16, 6, dtype=torch.float64)
    lam_min = torch.linalg.eigvalsh(h)[0]
    h_bad = h - (lam_min + 0.02 * h.diagonal().mean()) * torch.eye(
        16, dtype=torch.float64
    )  # slightly indefinite
    with pytest.warns(RuntimeWarning, match="raising the damping"):
        q = gptq_quantize(w, h_bad, QuantSpec(4), GPTQConfig(compute_dtype="float64"))
    assert bool(torch.isfinite(q.dequantize()).all())


def test_hopeless_hessian_falls_back_to_rtn(layer: Layer) -> None:
    w, _, _ = layer(8, 16, 7)
    h = -torch.eye(16, dtype=torch.float64)
    spec = QuantSpec(4, True, "group", 8)
    with pytest.warns(RuntimeWarning, match="falling back to RTN"):
        q = gptq_quantize(w, h, spec, GPTQConfig(damp_retries=2))
    assert torch.equal(q.codes, rtn_quantize(w, None, spec, RTNConfig(clip=GPTQConfig().search())).codes)


@pytest.mark.parametrize("scales", ["mse", "dynamic"])
def test_clip_search_composes_with_gptq(layer: Layer, scales: str) -> None:
    w, _, h = layer(16, 64, 8)
    w = w**3
    spec = QuantSpec(3, True, "group", 16)
    plain = layer_objective(w, gptq_quantize(w, h, spec, GPTQConfig(scales="static")).dequantize(), h)
    clipped = layer_objective(
        w, gptq_quantize(w, h, spec, GPTQConfig(scales=scales, clip=ClipSearch(grid=20))).dequantize(), h
    )
    assert clipped < plain


@pytest.mark.parametrize(
    ("weight", "hessian", "spec", "match"),
    [
        (torch.full((2, 8), float("nan")), torch.eye(8), QuantSpec(4), "weight contains NaN"),
        (torch.ones(2, 8), torch.full((8, 8), float("nan")), QuantSpec(4), "hessian contains NaN"),
        (torch.ones(2, 8), torch.eye(7), QuantSpec(4), r"shape \[8, 8\]"),
        (torch.ones(2, 8), torch.eye(8).int(), QuantSpec(4), "float"),
        (torch.ones(2, 12), torch.eye(12), QuantSpec(4, True, "group", 8), "does not divide"),
        (torch.ones(2, 8), torch.eye(8), QuantSpec(8, type="float"), "fp8"),
    ],
)
def test_gptq_rejects_bad_input(
    weight: torch.Tensor, hessian: torch.Tensor, spec: QuantSpec, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        gptq_quantize(weight, hessian, spec)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block_size": 0}, "block_size"),
        ({"damp_percent": 0.0}, "damp_percent"),
        ({"actorder": "group"}, "actorder"),
        ({"damp_retries": -1}, "damp_retries"),
        ({"compute_dtype": "float16"}, "compute_dtype"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GPTQConfig(**kwargs)


def test_no_warning_on_a_healthy_hessian(layer: Layer) -> None:
    w, _, h = layer(8, 32, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gptq_quantize(w, h, QuantSpec(4, True, "group", 8))
