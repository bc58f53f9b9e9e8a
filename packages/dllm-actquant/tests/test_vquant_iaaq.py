"""V quantization (hooks, granularities) and IA-AQ (search, weighting, calibration through dllm_calib)."""

from __future__ import annotations

import dllm_kernels
import hypothesis.strategies as st
import pytest
import torch
from dllm_actquant import (
    IAAQConfig,
    SmoothQuantConfig,
    TransformError,
    VQuantConfig,
    VQuantParams,
    apply_smoothquant,
    attach_v_quantizers,
    calibrate_iaaq,
    capture_inputs,
    fake_quantize_v,
    search_v_quant,
)
from dllm_calib import (
    AttentionCollector,
    AttentionSite,
    CalibrationSet,
    CalibrationState,
    ModelFeed,
    Provenance,
    collect,
)
from dllm_sampler import model_rope
from hypothesis import given

MASK = 95  # conftest VOCAB - 1


def _calibration_set(lengths: list[int], seed: int = 0) -> CalibrationSet:
    g = torch.Generator().manual_seed(seed)
    states = []
    for i, n in enumerate(lengths):
        ids = torch.randint(0, MASK - 2, (n,), generator=g)
        ratio = float(torch.rand((), generator=g))
        ids[torch.rand(n, generator=g) < ratio] = MASK
        masked = ids == MASK
        states.append(
            CalibrationState(
                input_ids=ids,
                attention_mask=torch.ones(n, dtype=torch.bool),
                is_masked=masked,
                mask_ratio=float(masked.float().mean()),
                t=ratio,
                source_index=i,
            )
        )
    return CalibrationSet(tuple(states), Provenance(builder="test"), MASK)


@given(
    seed=st.integers(0, 1000),
    bits=st.sampled_from([4, 8]),
    gran=st.sampled_from(["head", "channel", "token"]),
)
def test_fake_quantize_v_lands_on_the_grid(seed: int, bits: int, gran: str) -> None:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(2, 5, 3 * 8, generator=g)
    heads = v.view(-1, 3, 8)
    cfg = VQuantConfig(bits=bits, granularity=gran)
    if gran == "head":
        params = VQuantParams(torch.full((3,), 0.9), heads.amin((0, 2)), heads.amax((0, 2)))
    elif gran == "channel":
        params = VQuantParams(torch.full((3,), 0.9), heads.amin(0), heads.amax(0))
    else:
        params = VQuantParams(torch.full((3,), 0.9))
    vq = fake_quantize_v(v, params, cfg, num_kv_heads=3)
    assert vq.shape == v.shape and vq.dtype == v.dtype
    levels = vq.view(-1, 3, 8).unique().numel()
    assert levels <= 3 * 8 * 2**bits
    assert float((vq - v).abs().max()) < 0.5 * float(v.abs().max())
    err = (vq - v).abs().mean()
    assert 0 < err < (0.05 if bits == 8 else 0.5)


def test_token_granularity_matches_dllm_kernels() -> None:
    """alpha = 1 per-token V quantization equals dllm_kernels.quantize_per_token on the (token, head) rows."""
    v = torch.randn(4, 6, 2 * 16)
    cfg = VQuantConfig(bits=4, symmetric=False, granularity="token")
    ours = fake_quantize_v(v, VQuantParams(torch.ones(2)), cfg, num_kv_heads=2)
    codes, scale, zero = dllm_kernels.quantize_per_token(v.reshape(-1, 16), 4, False)
    ref = ((codes.float() - zero[:, None].float()) * scale[:, None]).reshape(v.shape)
    torch.testing.assert_close(ours, ref)


@given(
    seed=st.integers(0, 1000),
    bits=st.sampled_from([2, 3, 4, 8]),
    symmetric=st.booleans(),
    gran=st.sampled_from(["token", "row"]),
    alpha=st.sampled_from([1.0, 0.85]),
    tokens=st.integers(1, 9),
)
def test_one_clip_factor_takes_the_fused_pass_with_the_same_values(
    seed: int, bits: int, symmetric: bool, gran: str, alpha: float, tokens: int
) -> None:
    """With one clip factor for all heads, token / row V quantization runs as
    ``dllm_kernels.fake_quantize_per_token``; its values are those of the grid in torch
    (``torch_grid.scale_zero`` / ``encode`` / ``decode`` on each row's range)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(tokens, 3 * 8, generator=g) * torch.rand(tokens, 1, generator=g) * 5
    v[0, :8] = 0.0  # an all-zero (token, head) row
    cfg = VQuantConfig(bits=bits, symmetric=symmetric, granularity=gran)
    got = fake_quantize_v(v, VQuantParams(torch.full((3,), alpha)), cfg, num_kv_heads=3)
    rows = v.reshape(-1, 8) if gran == "token" else v
    lo, hi = rows.amin(-1, keepdim=True), rows.amax(-1, keepdim=True)
    grid = dllm_kernels.torch_grid
    scale, zero = grid.scale_zero(lo, hi, bits, symmetric, torch.tensor(alpha))
    want = grid.decode(grid.encode(rows, scale, zero, bits), scale, zero)
    assert torch.equal(got, want.reshape(v.shape))


def test_params_are_validated() -> None:
    cfg = VQuantConfig(granularity="head")
    with pytest.raises(ValueError, match="lo of shape"):
        fake_quantize_v(torch.randn(3, 8), VQuantParams(torch.ones(2)), cfg, 2)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        fake_quantize_v(
            torch.randn(3, 8), VQuantParams(torch.full((2,), 1.5), torch.zeros(2), torch.ones(2)), cfg, 2
        )
    with pytest.raises(ValueError, match="granularity"):
        VQuantConfig(granularity="tensor")
    with pytest.raises(ValueError, match="alphas"):
        IAAQConfig(alphas=(1.0, 1.2))


def _brute_force(v, p, cfg: IAAQConfig, k: int) -> torch.Tensor:
    """losses [n_alpha, K] by explicit loops over states and query heads."""
    n, length, width = v.shape
    dh, h = width // k, p.shape[1]
    heads = v.view(n, length, k, dh)
    lo, hi = heads.amin((0, 1, 3)), heads.amax((0, 1, 3))
    out = torch.zeros(len(cfg.alphas), k, dtype=torch.float64)
    for a, alpha in enumerate(cfg.alphas):
        vq = fake_quantize_v(v, VQuantParams(torch.full((k,), alpha), lo, hi), cfg.vquant, k).view(
            n, length, k, dh
        )
        for s in range(n):
            for q in range(h):
                j = q // (h // k)
                e = p[s, q].double() @ (vq[s, :, j] - heads[s, :, j]).double()
                out[a, j] += float(e.pow(2).sum())
    return out


@given(seed=st.integers(0, 1000), bits=st.sampled_from([3, 4]))
def test_search_matches_brute_force(seed: int, bits: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n, length, h, k, dh = 2, 7, 4, 2, 8
    v = torch.randn(n, length, k * dh, generator=g)
    v[0, 3] *= 6.0
    p = torch.softmax(3 * torch.randn(n, h, length, length, generator=g), -1)
    cfg = IAAQConfig(vquant=VQuantConfig(bits=bits), alphas=(1.0, 0.9, 0.8, 0.6))
    res = search_v_quant(v, p, cfg, num_kv_heads=k)
    ref = _brute_force(v, p, cfg, k)
    torch.testing.assert_close(res.losses, ref, rtol=1e-4, atol=1e-6)
    chosen = torch.tensor([cfg.alphas[int(i)] for i in ref.argmin(0)], dtype=torch.float64)
    torch.testing.assert_close(res.params.alpha, chosen)


def test_attention_weighting_changes_the_choice() -> None:
    """An outlier token nobody attends to: IA-AQ clips it (alpha 0.8), plain MSE protects it (alpha 1.0)."""
    g = torch.Generator().manual_seed(0)
    length, dh = 16, 8
    v = torch.randn(1, length, dh, generator=g)
    v[0, 5] = 20.0
    p = torch.eye(length)[None, None].clone()
    p[0, 0, 5] = 0.0
    p[0, 0, 5, 0] = 1.0  # token 5 reads token 0; nobody reads token 5
    vcfg = VQuantConfig(bits=4, granularity="head")
    weighted = search_v_quant(v, p, IAAQConfig(vquant=vcfg), num_kv_heads=1)
    plain = search_v_quant(v, None, IAAQConfig(vquant=vcfg, weighted=False), num_kv_heads=1)
    assert float(weighted.params.alpha[0]) == 0.8
    assert float(plain.params.alpha[0]) == 1.0


def test_model_rope_reproduces_the_attention_output(make_model) -> None:
    """P from dllm_calib's collector (with our RoPE) times V equals the o-projection input (both layouts)."""
    for arch in ("llada", "dream"):
        dlm = make_model(arch)
        cset = _calibration_set([12, 12, 9])
        topo = dlm.topology
        b = topo.blocks[1]
        site = AttentionSite(
            "s", b.names["q"], b.names["k"], b.n_heads, b.n_kv_heads, b.head_dim, model_rope(dlm)
        )
        vs: list[torch.Tensor] = []
        handle = b.v_proj.register_forward_hook(lambda _m, _i, out, vs=vs: vs.append(out.detach()))
        try:
            with torch.no_grad():
                res = collect(
                    ModelFeed(dlm, cset, 8), [b.names["v"]], [AttentionCollector([site], keep_probs=True)]
                )
                o_in = capture_inputs(dlm, [s.input_ids[None] for s in cset], [b.names["o"]]).samples[
                    b.names["o"]
                ]
        finally:
            handle.remove()
        probs = res["attention"]["s"].probs
        v = vs[0]  # one padded batch [3, 12, K*Dh]
        rows = []
        for i, state in enumerate(cset):
            n = state.length
            vh = v[i, :n].view(n, b.n_kv_heads, b.head_dim).transpose(0, 1).repeat_interleave(b.gqa_groups, 0)
            rows.append((probs[i].double() @ vh.double()).transpose(0, 1).reshape(n, -1))
        torch.testing.assert_close(torch.cat(rows), o_in.double(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["llada", "dream"])
@pytest.mark.parametrize("gran", ["head", "token"])
def test_calibrate_iaaq_through_dllm_calib(make_model, relerr, arch, gran) -> None:
    """The streaming calibration equals search_v_quant on the same V and P, and the result is usable."""
    dlm = make_model(arch)
    cset = _calibration_set([10, 10, 10, 10])
    cfg = IAAQConfig(vquant=VQuantConfig(bits=4, granularity=gran), alphas=(1.0, 0.8, 0.6))
    results = calibrate_iaaq(dlm, ModelFeed(dlm, cset, 2), cfg)
    assert sorted(results) == list(range(len(dlm.topology)))
    b = dlm.topology.blocks[0]
    site = AttentionSite(
        "s", b.names["q"], b.names["k"], b.n_heads, b.n_kv_heads, b.head_dim, model_rope(dlm)
    )
    vs: list[torch.Tensor] = []
    handle = b.v_proj.register_forward_hook(lambda _m, _i, out: vs.append(out.detach()))
    try:
        with torch.no_grad():
            res = collect(
                ModelFeed(dlm, cset, 4), [b.names["v"]], [AttentionCollector([site], keep_probs=True)]
            )
    finally:
        handle.remove()
    p = torch.stack([res["attention"]["s"].probs[i] for i in range(4)])
    ref = search_v_quant(vs[0], p, cfg, b.n_kv_heads)
    torch.testing.assert_close(results[0].losses, ref.losses, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(results[0].params.alpha, ref.params.alpha)
    assert bool((results[0].losses.min(0).values <= results[0].losses[0]).all())

    data = torch.stack([s.input_ids for s in cset])
    with torch.no_grad():
        ref_logits = dlm.logits(data)
        with attach_v_quantizers(dlm, cfg.vquant, {i: r.params for i, r in results.items()}):
            quant_logits = dlm.logits(data)
            with pytest.raises(TransformError, match="v-output"):
                apply_smoothquant(dlm, {}, SmoothQuantConfig())
        assert torch.equal(dlm.logits(data), ref_logits)  # hooks removed
    assert 0 < relerr(quant_logits, ref_logits) < 0.5


def test_attach_requires_params_for_static(make_model) -> None:
    dlm = make_model("llada")
    with pytest.raises(ValueError, match="calibrated params"):
        attach_v_quantizers(dlm, VQuantConfig(granularity="head"))
    handle = attach_v_quantizers(dlm, VQuantConfig(bits=8, granularity="token"))
    handle.remove()
