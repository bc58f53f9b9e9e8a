"""AWQ: scale search against the layer-group output error, folded through the topology."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from dllm_kernels import QuantSpec
from dllm_sampler import DiffusionLM
from dllm_weightquant import AWQConfig, apply_awq, awq_search_scale, fake_quantize_weight
from hypothesis import given
from hypothesis import strategies as st

Layer = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _outlier_layer(seed: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 64, generator=g, dtype=torch.float64)
    x[:, :4] *= 30.0  # salient input channels
    ws = [torch.randn(24, 64, generator=g), torch.randn(16, 64, generator=g)]
    return ws, x, x.T @ x / x.shape[0]


@given(seed=st.integers(0, 2**31 - 1), duo=st.booleans(), bits=st.sampled_from([3, 4]))
def test_search_never_worse_than_no_scaling(seed: int, duo: bool, bits: int) -> None:
    ws, x, h = _outlier_layer(seed)
    res = awq_search_scale(
        ws, x.abs().mean(0), h, QuantSpec(bits, False, "group", 16), AWQConfig(n_grid=10, duo_scaling=duo)
    )
    assert res.error <= res.baseline_error
    assert res.scale.shape == (64,) and bool((res.scale > 0).all())
    if res.alpha is None:
        assert torch.equal(res.scale, torch.ones(64))


def test_search_scales_up_salient_channels_and_measures_real_output_error() -> None:
    ws, x, h = _outlier_layer(0)
    spec = QuantSpec(3, True, "group", 16)
    res = awq_search_scale(ws, x.abs().mean(0), h, spec)
    assert res.alpha is not None and res.alpha > 0
    assert res.error < 0.8 * res.baseline_error
    assert float(res.scale[:4].min()) > float(res.scale[4:].max())
    # the reported error is the output error on the activations: sum_t |Q(W s)(x/s) - W x|^2 / T
    w = torch.cat(ws).double()
    s = res.scale.double()
    q = fake_quantize_weight((w * s).float(), spec).double()
    direct = float(((x / s) @ q.T - x @ w.T).pow(2).sum()) / x.shape[0]
    assert direct == pytest.approx(res.error, rel=1e-6)


def _stats(dlm: DiffusionLM, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    names = dlm.topology.linear_names()
    inputs: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    hooks = [
        dlm.model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: inputs[n].append(i[0].detach()))
        for n in names
    ]
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, dlm.vocab_size - 4, (4, 32), generator=g)
    ids[torch.rand(ids.shape, generator=g) < 0.4] = dlm.mask_token_id
    with torch.no_grad():
        dlm.logits(ids)
    for hk in hooks:
        hk.remove()
    hessians, means = {}, {}
    for n, xs in inputs.items():
        x = torch.cat([t.reshape(-1, t.shape[-1]) for t in xs]).double()
        hessians[n] = x.T @ x / x.shape[0]
        means[n] = x.abs().mean(0)
    return hessians, means


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_apply_awq_keeps_the_float_model_and_folds_scales(
    tiny_dlm: Callable[[str], DiffusionLM], arch: str
) -> None:
    dlm = tiny_dlm(arch)
    with torch.no_grad():  # make some channels salient so AWQ has something to do
        for b in dlm.topology:
            b.attn_norm.weight.mul_(torch.linspace(0.2, 4.0, b.attn_norm.weight.shape[0]))
            b.mlp_norm.weight.mul_(torch.linspace(4.0, 0.2, b.mlp_norm.weight.shape[0]))
    ids = torch.randint(0, dlm.vocab_size - 4, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = dlm.logits(ids)
    hessians, means = _stats(dlm)
    q_before = dlm.topology.block(0).q_proj.weight.detach().clone()
    results = apply_awq(dlm.topology, hessians, means, QuantSpec(3, True, "group", 16))
    assert set(results) == {
        f"{i}.{g}" for i in range(len(dlm.topology)) for g in ("attn", "vo", "mlp", "down")
    }
    with torch.no_grad():
        after = dlm.logits(ids)
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)
    scaled = [k for k, r in results.items() if r.alpha is not None]
    assert scaled, "AWQ found no scale worth folding"
    for r in results.values():
        assert r.error <= r.baseline_error
    if results["0.attn"].alpha is not None:
        expected = q_before * results["0.attn"].scale
        assert torch.allclose(dlm.topology.block(0).q_proj.weight, expected, rtol=1e-5, atol=1e-6)


def test_apply_awq_needs_statistics(tiny_dlm: Callable[[str], DiffusionLM]) -> None:
    dlm = tiny_dlm("llada")
    with pytest.raises(KeyError, match="q_proj"):
        apply_awq(dlm.topology, {}, {}, QuantSpec(4, True, "group", 16))


def test_bad_inputs() -> None:
    ws, x, h = _outlier_layer(1)
    spec = QuantSpec(4, True, "group", 16)
    with pytest.raises(ValueError, match="act_mean_abs"):
        awq_search_scale(ws, x.abs().mean(0)[:10], h, spec)
    with pytest.raises(ValueError, match="non-negative"):
        awq_search_scale(ws, -x.abs().mean(0), h, spec)
    with pytest.raises(ValueError, match="hessian contains NaN"):
        awq_search_scale(ws, x.abs().mean(0), torch.full_like(h, float("nan")), spec)
    with pytest.raises(ValueError, match="groups"):
        AWQConfig(groups=("qkv",))
