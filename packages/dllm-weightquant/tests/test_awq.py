"""AWQ: scale search against the layer-group output error, folded through the topology."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from dllm_calib import TokenFeed
from dllm_kernels import QuantSpec
from dllm_sampler import DiffusionLM, tiny_config
from dllm_weightquant import (
    AWQConfig,
    QuantLinear,
    apply_awq,
    apply_awq_clip,
    awq_search_scale,
    fake_quantize_weight,
    replace_linear,
    rtn_quantize,
)
from dllm_weightquant.awq_loss import AUTO_LOSS, resolve_loss
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


def _ids(dlm: DiffusionLM, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, dlm.vocab_size - 4, (4, 32), generator=g)
    ids[torch.rand(ids.shape, generator=g) < 0.4] = dlm.mask_token_id
    return ids


def _stats(dlm: DiffusionLM, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    names = dlm.topology.linear_names()
    inputs: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    hooks = [
        dlm.model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: inputs[n].append(i[0].detach()))
        for n in names
    ]
    ids = _ids(dlm, seed)
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


def _salient(dlm: DiffusionLM) -> DiffusionLM:
    """Make some input channels of the attention and MLP salient, so AWQ has something to do."""
    with torch.no_grad():
        for b in dlm.topology:
            d = b.attn_norm.weight.shape[0]
            b.attn_norm.weight.mul_(torch.linspace(0.2, 4.0, d))
            b.mlp_norm.weight.mul_(torch.linspace(4.0, 0.2, d))
    return dlm


def test_sublayer_loss_on_down_is_the_linear_proxy_on_the_same_tokens(
    tiny_dlm: Callable[[str], DiffusionLM],
) -> None:
    # down's output error over all tokens and channels is tr(E H E^T) / out: same choice, scaled error
    dlm = _salient(tiny_dlm("llada"))
    hessians, means = _stats(dlm)
    spec = QuantSpec(3, False, "group", 16)
    by_proxy = apply_awq(copy.deepcopy(dlm).topology, hessians, means, spec, AWQConfig(groups=("down",)))
    feed = TokenFeed(dlm, [_ids(dlm)])
    config = AWQConfig(groups=("down",), loss="sublayer", max_tokens=10**6)
    by_output = apply_awq(dlm.topology, {}, means, spec, config, feed=feed)
    out = dlm.topology.block(0).down_proj.out_features
    for key, proxy in by_proxy.items():
        assert by_output[key].alpha == proxy.alpha
        assert by_output[key].error * out == pytest.approx(proxy.error, rel=1e-4)
        assert by_output[key].baseline_error * out == pytest.approx(proxy.baseline_error, rel=1e-4)


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_sublayer_loss_keeps_the_float_model(tiny_dlm: Callable[[str], DiffusionLM], arch: str) -> None:
    dlm = _salient(tiny_dlm(arch))
    ids = _ids(dlm, 1)
    with torch.no_grad():
        before = dlm.logits(ids)
    _, means = _stats(dlm)
    feed = TokenFeed(dlm, [_ids(dlm)[:2], _ids(dlm)[2:]])
    config = AWQConfig(n_grid=5, loss="sublayer", max_tokens=40)  # two batches of 64 tokens: only the first
    results = apply_awq(dlm.topology, {}, means, QuantSpec(3, False, "group", 16), config, feed=feed)
    with torch.no_grad():
        after = dlm.logits(ids)
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)  # candidates restored, folds invariant
    assert all(r.error <= r.baseline_error for r in results.values())
    assert any(r.alpha is not None for r in results.values())


def test_block_loss_needs_a_block_feed(tiny_dlm: Callable[[str], DiffusionLM]) -> None:
    dlm = tiny_dlm("llada")
    _, means = _stats(dlm)
    feed = TokenFeed(dlm, [_ids(dlm)])
    with pytest.raises(ValueError, match="block feed"):
        apply_awq(
            dlm.topology, {}, means, QuantSpec(4, True, "group", 16), AWQConfig(loss="block"), feed=feed
        )
    with pytest.raises(ValueError, match="pass the block's feed"):
        apply_awq(dlm.topology, {}, means, QuantSpec(4, True, "group", 16), AWQConfig(loss="sublayer"))


def test_auto_loss_is_llm_awqs_choice_per_architecture() -> None:
    assert dict(AUTO_LOSS) == {"llada": "block", "dream": "sublayer"}
    assert resolve_loss("auto", "llada") == "block" and resolve_loss("auto", "dream") == "sublayer"
    assert resolve_loss("linear", "llada") == "linear"
    with pytest.raises(ValueError, match="no choice for architecture 'opt'"):
        resolve_loss("auto", "opt")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"loss": "mse"},
            r"AWQConfig.loss must be one of \['linear', 'sublayer', 'block', 'auto'\], got 'mse'",
        ),
        ({"max_tokens": 0}, "AWQConfig.max_tokens must be a positive integer"),
    ],
)
def test_loss_config_errors_name_the_field(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AWQConfig(**params)


_G128 = {
    "llada": {"d_model": 128, "mlp_hidden_size": 256},
    "dream": {"hidden_size": 128, "intermediate_size": 256},
}


def _rtn_everything(dlm: DiffusionLM, spec: QuantSpec) -> None:
    for name in dlm.topology.linear_names():
        linear = dlm.model.get_submodule(name)
        quantized = rtn_quantize(linear.weight, None, spec)
        assert quantized.zero is not None  # the zero point is really used
        replace_linear(dlm.model, name, QuantLinear.from_linear(linear, quantized, mode="fake"))


def _logit_kl(ref: torch.Tensor, out: torch.Tensor) -> float:
    p, q = ref.log_softmax(-1), out.log_softmax(-1)
    return float((p.exp() * (p - q)).sum(-1).mean())


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_awq_fold_clip_and_rtn_with_a_zero_point_at_g128(arch: str) -> None:
    """QDLM's llm-awq setting: W4 g128 with zero point, scales then clip, then RTN."""
    base = _salient(DiffusionLM.from_config(tiny_config(arch, **_G128[arch]), seed=0))
    spec = QuantSpec(bits=4, symmetric=False, granularity="group", group_size=128)
    ids = _ids(base, 1)
    with torch.no_grad():
        ref = base.logits(ids)
    dlm = copy.deepcopy(base)
    hessians, means = _stats(dlm)
    scales = apply_awq(dlm.topology, hessians, means, spec)
    assert all(r.error <= r.baseline_error for r in scales.values())
    with torch.no_grad():
        assert torch.allclose(dlm.logits(ids), ref, atol=1e-4, rtol=1e-4)
    qk = [b.q_proj.weight.clone() for b in dlm.topology] + [b.k_proj.weight.clone() for b in dlm.topology]
    ignored = frozenset({dlm.topology.block(1).names["up"]})
    up = dlm.topology.block(1).up_proj.weight.clone()
    hessians, _ = _stats(dlm)  # fresh statistics of the scaled inputs
    clips = apply_awq_clip(dlm.topology, hessians, spec, AWQConfig(clip=True), ignored=ignored)
    roles = ("v", "o", "gate", "up", "down")
    expected = {b.names[r] for b in dlm.topology for r in roles} - ignored
    assert set(clips) == expected
    assert all(c.error <= c.baseline_error for c in clips.values())
    assert any(float(c.ratio.min()) < 1.0 for c in clips.values())
    after_qk = [b.q_proj.weight for b in dlm.topology] + [b.k_proj.weight for b in dlm.topology]
    assert all(torch.equal(a, b) for a, b in zip(qk, after_qk, strict=True))
    assert torch.equal(dlm.topology.block(1).up_proj.weight, up)
    assert all(bool(torch.isfinite(p).all()) for p in dlm.model.parameters())
    _rtn_everything(dlm, spec)
    plain = copy.deepcopy(base)
    _rtn_everything(plain, spec)
    with torch.no_grad():
        awq_out, rtn_out = dlm.logits(ids), plain.logits(ids)
    assert bool(torch.isfinite(awq_out).all())
    assert _logit_kl(ref, awq_out) < _logit_kl(ref, rtn_out)
