"""SmoothQuant: float invariance of every pair on MHA and GQA layouts, the range balance it targets, the
per-kv-channel v -> o statistics, and errors."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from dllm_actquant import (
    READER_ROLES,
    SMOOTH_PAIRS,
    ActQuantConfig,
    SmoothQuantConfig,
    TransformError,
    apply_smoothquant,
    capture_inputs,
    channel_spread,
    mark_quantized,
    pair_scales,
    quantize_activations,
    range_imbalance,
    smoothquant_scales,
)
from dllm_sampler import DiffusionLM, tiny_config
from hypothesis import given, settings

CONFIGS: dict[str, tuple[str, dict[str, int]]] = {
    "llada": ("llada", {}),
    "dream": ("dream", {}),
    "llada-mqa-h3-dh64": ("llada", {"d_model": 192, "n_heads": 3, "n_kv_heads": 1, "mlp_hidden_size": 256}),
    "dream-mqa-h3-dh64": (
        "dream",
        {"hidden_size": 192, "num_attention_heads": 3, "num_key_value_heads": 1, "intermediate_size": 256},
    ),
}
"""``tiny_config`` models: MHA LLaDA, GQA Dream (4 heads, 2 kv heads), and 3 heads of dim 64 sharing one
kv head (G = 3) in both layouts."""

PAIR_SETS = [(p,) for p in SMOOTH_PAIRS] + [SMOOTH_PAIRS]
FP32_TOL = 1e-4
"""fp32 invariance bound on ``||logits' - logits|| / ||logits||``."""


def _tiny(name: str, randomize, seed: int = 0) -> DiffusionLM:
    arch, overrides = CONFIGS[name]
    dlm = DiffusionLM.from_config(tiny_config(arch, **overrides), seed=seed, dtype=torch.float32)
    randomize(dlm, seed + 1000)
    return dlm


def _tokens(dlm: DiffusionLM, seed: int = 0) -> list[torch.Tensor]:
    """Two ``[2, 16]`` batches of ordinary tokens with about a third masked."""
    cfg = dlm.model.config
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        ids = torch.randint(0, cfg.vocab_size - 4, (2, 16), generator=g)
        ids[torch.rand(2, 16, generator=g) < 0.3] = cfg.mask_token_id
        out.append(ids)
    return out


def _random_absmax(dlm: DiffusionLM, seed: int, spread: float) -> dict[str, torch.Tensor]:
    """Log-normal per-channel absmax (log std ``spread``) of every block's q, o, gate and down input, with
    about 5% dead (zero) channels."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for b in dlm.topology:
        for role in READER_ROLES:
            n = b.module(role).weight.shape[1]
            a = torch.exp(spread * torch.randn(n, generator=g, dtype=torch.float64))
            a[torch.rand(n, generator=g) < 0.05] = 0.0
            out[b.names[role]] = a
    return out


def _smoothed_error(dlm: DiffusionLM, data, relerr, smooth) -> float:
    with torch.no_grad():
        ref = [dlm.logits(x) for x in data]
        smooth(dlm)
        return max(relerr(dlm.logits(x), r) for x, r in zip(data, ref, strict=True))


@pytest.mark.parametrize("pairs", PAIR_SETS, ids=lambda p: "+".join(p))
@pytest.mark.parametrize("name", list(CONFIGS))
@settings(max_examples=2)
@given(seed=st.integers(0, 1000), spread=st.floats(1.0, 3.0))
def test_every_pair_keeps_fp32_logits(randomize, relerr, name, pairs, seed, spread) -> None:
    """Random statistics (scales over several orders of magnitude) on each pair alone and all four."""
    dlm = _tiny(name, randomize, seed)
    stats = _random_absmax(dlm, seed, spread)
    config = SmoothQuantConfig(alpha=0.5, pairs=pairs)
    scales: dict[str, torch.Tensor] = {}
    err = _smoothed_error(
        dlm, _tokens(dlm, seed), relerr, lambda m: scales.update(apply_smoothquant(m, stats, config))
    )
    assert err < FP32_TOL
    assert len(scales) == len(pairs) * len(dlm.topology)
    assert max(float(s.log().abs().max()) for s in scales.values()) > 0.5  # the folds did move weights


@pytest.mark.parametrize("name", ["dream", "llada-mqa-h3-dh64", "dream-mqa-h3-dh64"])
def test_a_wrong_gqa_fold_breaks_the_invariance_check(randomize, relerr, name) -> None:
    """Expanding the kv-channel scale ``[K * Dh]`` over o's columns channel by channel
    (``s.repeat_interleave(G)``, the view as ``[K, Dh]`` forgotten) instead of head by head is caught far
    above `FP32_TOL`: the invariance test can fail."""
    dlm = _tiny(name, randomize)
    stats = _random_absmax(dlm, seed=1, spread=1.5)

    def wrong_vo(m: DiffusionLM) -> None:
        for b in m.topology:
            s = pair_scales(b, "vo", stats[b.names["o"]], 0.5)
            b.v_proj.weight.div_(s[:, None].float())
            if b.v_proj.bias is not None:
                b.v_proj.bias.div_(s.float())
            b.o_proj.weight.mul_(s.repeat_interleave(b.gqa_groups).float())

    assert dlm.topology.blocks[0].gqa_groups > 1
    assert _smoothed_error(dlm, _tokens(dlm), relerr, wrong_vo) > 100 * FP32_TOL


@given(
    arch=st.sampled_from(["llada", "dream"]),
    seed=st.integers(0, 50),
    alpha=st.floats(0.0, 1.0),
    pairs=st.sets(st.sampled_from(SMOOTH_PAIRS), min_size=1),
)
def test_smoothquant_keeps_logits_fp64(make_model, batches, relerr, arch, seed, alpha, pairs) -> None:
    dlm = make_model(arch, seed=seed)
    data = batches(n=2, seed=seed)
    config = SmoothQuantConfig(alpha=alpha, pairs=tuple(p for p in SMOOTH_PAIRS if p in pairs))
    with torch.no_grad():
        stats = capture_inputs(dlm, data, dlm.topology.linear_names()).absmax
    assert _smoothed_error(dlm, data, relerr, lambda m: apply_smoothquant(m, stats, config)) < 1e-9


@pytest.mark.parametrize("name", ["dream", "dream-mqa-h3-dh64"])
def test_vo_scale_lives_on_kv_channels(randomize, name) -> None:
    """v -> o under GQA: ``s[j, d]`` balances the max over the G o columns (h, d), h in group j, of the
    activation absmax and of the o-weight column absmax (checked against an explicit loop)."""
    dlm = _tiny(name, randomize)
    b = dlm.topology.blocks[0]
    act = _random_absmax(dlm, seed=3, spread=1.0)[b.names["o"]]
    w = b.o_proj.weight.detach().abs().amax(0).double()
    k, g, dh = b.n_kv_heads, b.gqa_groups, b.head_dim
    expected = torch.ones(k * dh, dtype=torch.float64)
    for j in range(k):
        for d in range(dh):
            cols = [h * dh + d for h in range(j * g, (j + 1) * g)]
            a_max, w_max = act[cols].max(), w[cols].max()
            if a_max > 0:
                expected[j * dh + d] = a_max**0.3 / w_max**0.7
    torch.testing.assert_close(pair_scales(b, "vo", act, 0.3), expected)


def _w_absmax(mods) -> torch.Tensor:
    return torch.stack([m.weight.detach().abs().amax(0) for m in mods]).amax(0)


def _group_max(x: torch.Tensor, b) -> torch.Tensor:
    return x.reshape(b.n_kv_heads, b.gqa_groups, b.head_dim).amax(1).reshape(-1)


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_smoothquant_balances_activation_and_weight_ranges(make_model, batches, outliers, arch) -> None:
    """At alpha 0.5 max|X_j| / max|W_j| is the same for every channel j of the smoothed pair (spread 1; kv
    channels for v -> o, grouped over the query heads sharing them) and the outlier channels shrink.

    Checked in two runs: attn + mlp, then vo + down (a v -> o or up -> down fold rescales v's / up's rows,
    which changes the q/k/v and gate/up column ranges the norm-side balance is measured on).
    """
    for pairs in (("attn", "mlp"), ("vo", "down")):
        dlm = make_model(arch)
        outliers(dlm, factor=30.0)
        data = batches()
        b = dlm.topology.blocks[0]
        b_names = [b.names[r] for r in READER_ROLES]
        q, o, gate, down = b_names
        with torch.no_grad():
            before = capture_inputs(dlm, data, b_names).absmax
            imbalance = {
                q: range_imbalance(before[q], _w_absmax(b.attn_inputs)),
                down: range_imbalance(before[down], _w_absmax([b.down_proj])),
            }
            stats = capture_inputs(dlm, data, dlm.topology.linear_names()).absmax
            apply_smoothquant(dlm, stats, SmoothQuantConfig(pairs=pairs))
            after = capture_inputs(dlm, data, b_names).absmax
        if pairs == ("attn", "mlp"):
            assert imbalance[q] > 30
            assert range_imbalance(after[q], _w_absmax(b.attn_inputs)) < 1 + 1e-6
            assert range_imbalance(after[gate], _w_absmax(b.mlp_inputs)) < 1 + 1e-6
            assert channel_spread(after[q]) < channel_spread(before[q]) / 3
            torch.testing.assert_close(after[down], before[down], rtol=1e-12, atol=0)
        else:
            grouped = _group_max(after[o], b), _group_max(_w_absmax([b.o_proj]), b)
            assert range_imbalance(*grouped) < 1 + 1e-6
            assert imbalance[down] > 30
            assert range_imbalance(after[down], _w_absmax([b.down_proj])) < 1 + 1e-6
            assert channel_spread(after[down]) < channel_spread(before[down]) / 3
            torch.testing.assert_close(after[q], before[q], rtol=1e-12, atol=0)


def test_per_pair_alpha_overrides_the_common_one(make_model, batches) -> None:
    dlm = make_model("dream")
    with torch.no_grad():
        stats = capture_inputs(dlm, batches(n=1), dlm.topology.linear_names()).absmax
    config = SmoothQuantConfig(alpha=0.5, pairs=SMOOTH_PAIRS, alphas={"down": 0.8, "vo": 0.2})
    assert [config.alpha_for(p) for p in SMOOTH_PAIRS] == [0.5, 0.2, 0.5, 0.8]
    b = dlm.topology.blocks[1]
    expected = {
        b.names["up"]: pair_scales(b, "down", stats[b.names["down"]], 0.8),
        b.names["v"]: pair_scales(b, "vo", stats[b.names["o"]], 0.2),
        b.names["attn_norm"]: pair_scales(b, "attn", stats[b.names["q"]], 0.5),
    }
    got = apply_smoothquant(dlm, stats, config)
    for name, s in expected.items():
        torch.testing.assert_close(got[name], s, rtol=0, atol=0)
    assert got[b.names["v"]].shape == (b.n_kv_heads * b.head_dim,)


def test_smoothquant_scales_formula() -> None:
    a = torch.tensor([4.0, 1.0, 0.0, 9.0])
    w = torch.tensor([[1.0, -4.0, 2.0, 0.0], [0.5, 1.0, 1.0, 0.0]])
    s = smoothquant_scales(a, [w], alpha=0.5)
    torch.testing.assert_close(s, torch.tensor([2.0, 0.5, 1.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.5}, r"SmoothQuantConfig\.alpha must be a number in \[0.0, 1.0\]"),
        (
            {"pairs": ("attn", "up_down")},
            r"SmoothQuantConfig\.pairs must be one of \['attn', 'vo', 'mlp', 'down'\]",
        ),
        (
            {"pairs": ()},
            r"SmoothQuantConfig\.pairs must be a non-empty tuple of distinct names from \['attn'",
        ),
        ({"pairs": ("attn", "attn")}, r"SmoothQuantConfig\.pairs must be a non-empty tuple"),
        (
            {"alphas": {"down": 0.8}},
            r"SmoothQuantConfig\.alphas keys must be smoothed pairs \['attn', 'mlp'\]",
        ),
        ({"pairs": ("down",), "alphas": {"down": 2.0}}, r"SmoothQuantConfig\.alphas\['down'\] must be"),
        ({"alphas": [("attn", 0.5)]}, r"SmoothQuantConfig\.alphas must be a mapping"),
    ],
)
def test_config_errors_name_the_field_and_allowed_values(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        SmoothQuantConfig(**kwargs)


def test_config_from_a_recipe_step() -> None:
    data = {"alpha": 0.5, "pairs": ["attn", "vo", "mlp", "down"], "alphas": {"down": 0.8}}
    config = SmoothQuantConfig.from_dict(data)
    assert config.pairs == SMOOTH_PAIRS and config.alpha_for("down") == 0.8
    assert SmoothQuantConfig.from_dict(config.to_dict()) == config


def test_errors(make_model, batches) -> None:
    dlm = make_model("llada")
    data = batches(n=1)
    with torch.no_grad():
        stats = capture_inputs(dlm, data, dlm.topology.linear_names()).absmax
    with pytest.raises(KeyError, match="input absmax"):
        apply_smoothquant(dlm, {})
    mark_quantized(dlm.topology.blocks[1].up_proj)  # what a weight quantizer does
    with pytest.raises(TransformError, match="already quantized"):
        apply_smoothquant(dlm, stats)
    other = make_model("dream")
    quantize_activations(other, ActQuantConfig())
    with pytest.raises(TransformError, match="already quantized"):
        apply_smoothquant(other, stats)
