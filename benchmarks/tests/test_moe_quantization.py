"""The layer-wise pipeline on random tiny LLaDA2 (mixture-of-experts) models: every routed expert on its own
Hessian, per-expert coverage, the starved-expert policies, the router left in float, and end-to-end runs
whose quantized model still generates."""

from __future__ import annotations

import pytest
import torch
from dllm_bench.cli import main
from dllm_bench.loading import load_any
from dllm_bench.pipeline import ModelContext, expert_coverage, export_model, format_coverage, quantize_model
from dllm_bench.pipeline.blocks import BlockRunner
from dllm_bench.pipeline.calibration import prepare_calibration
from dllm_bench.pipeline.feed import HiddenCache
from dllm_bench.recipes import Recipe, load_recipe
from dllm_calib import ExpertPolicy, HessianStats, RoutedHessianCollector, collect
from dllm_kernels import QuantSpec
from dllm_sampler import BlockDiffusionConfig, DiffusionLM, generate_block, save
from dllm_sampler.models.llada2_moe import LLaDA2Router
from dllm_sampler.models.spec import arch_spec, shared_input_groups
from dllm_sampler.testing import CHAR_VOCAB, char_tokenizer, random_llada2
from dllm_weightquant import QuantLinear, gptq_quantize, rtn_quantize, set_compute_dtype
from dllm_weightquant.block_quantizer import quantize_linears
from dllm_weightquant.gptq import GPTQConfig
from dllm_weightquant.hessian import layer_objective
from pydantic import ValidationError
from torch import nn

RANDOM_CALIBRATION = {"builder": "random", "params": {"num_samples": 6, "seq_len": 24}, "batch_size": 4}
TMAS_CALIBRATION = {
    "builder": "tmas",
    "params": {"num_prompts": 2, "num_samples": 8, "num_buckets": 2, "quotas": [0.5, 0.5]},
    "source": "arithmetic",
    "sampler": {"gen_length": 32, "block_length": 32},
    "batch_size": 4,
}
SPECIALS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "mask_token_id": 3}


def tiny_moe(seed: int = 0, **overrides) -> DiffusionLM:  # type: ignore[no-untyped-def]
    """A random LLaDA2 with the character tokenizer: a dense first layer, then two routed layers of 4
    experts (top-2) with a shared expert."""
    vocab = dict.fromkeys(arch_spec("llada2").config_cls.VOCAB_KEYS, CHAR_VOCAB)
    dlm = random_llada2(seed, first_k_dense_replace=1, num_hidden_layers=3, **vocab, **SPECIALS, **overrides)
    dlm.tokenizer = char_tokenizer()
    return dlm


def recipe(name: str, scheme: str, calibration: dict | None = None, **changes) -> Recipe:  # type: ignore[type-arg]
    data = load_recipe(name).with_scheme(scheme).to_dict()
    data["calibration"] = calibration or RANDOM_CALIBRATION
    return Recipe.model_validate({**data, **changes})


def expert_names(dlm: DiffusionLM) -> list[str]:
    return [name for block in dlm.topology for role, name in block.names.items() if role in block.routes]


def block_context(dlm: DiffusionLM, r: Recipe, index: int, policy: ExpertPolicy, sequential: bool = True):  # type: ignore[no-untyped-def]
    """The pipeline's context of float block ``index`` (its inputs through the float prefix)."""
    runner = BlockRunner(dlm)
    cset = prepare_calibration(r.calibration, dlm, r.seed)
    cache = HiddenCache.embed(runner, cset, r.calibration.batch_size)
    for i in range(index):
        cache = cache.propagate(runner, i)
    spec = r.scheme.weights.spec()
    model = ModelContext(runner, cset, r.calibration.batch_size, spec, frozenset(), sequential, policy)
    return model.at_block(index, cache)


def own_hessians(context, names: list[str]) -> dict[str, HessianStats]:  # type: ignore[no-untyped-def]
    block = context.dlm.topology.block(context.index)
    routes = {block.names[r]: block.routes[r] for r in block.routes if block.names[r] in names}
    (_, feed), *_ = list(context.feeds())
    return collect(feed, names, [RoutedHessianCollector(routes)])["hessian"]


def test_coverage_counts_every_real_token_top_k_times_and_is_reported() -> None:
    dlm = tiny_moe()
    result = quantize_model(dlm, recipe("gptq", "W4A16g16"), progress=False)
    tokens = 6 * 24  # RANDOM_CALIBRATION: no padding
    top_k = dlm.config.moe().top_k
    assert [c.layer for c in result.coverage] == [1, 2]
    for layer in result.coverage:
        assert len(layer.tokens) == 4 and sum(layer.tokens) == top_k * tokens
        shared = next(
            r for r in result.rows if r.module == f"model.layers.{layer.layer}.mlp.shared_experts.up_proj"
        )
        assert shared.tokens == tokens
    assert expert_coverage(result.rows, dlm) == result.coverage
    lines = format_coverage(result.coverage)
    assert len(lines) == 2 and "layer   1: 4 experts, tokens min" in lines[0]


def test_coverage_of_a_layer_equals_its_router_assignments() -> None:
    dlm = tiny_moe()
    r = recipe("gptq", "W4A16g16")
    # one pass over the float block (not true-sequential), so the routing seen here is the one collected
    context = block_context(dlm, r, 1, ExpertPolicy(), sequential=False)
    (_, feed), *_ = list(context.feeds())
    routing = dlm.model.get_submodule("model.layers.1.mlp.routing")
    seen: list[torch.Tensor] = []
    hook = routing.register_forward_hook(lambda m, inp, out: seen.append(inp[0].flatten()))
    with torch.no_grad():
        for batch in feed.batches():
            feed.forward(batch)
    hook.remove()
    assigned = torch.bincount(torch.cat(seen), minlength=4).tolist()
    rows = quantize_linears(context, GPTQConfig(), method="gptq", fn=gptq_quantize)
    block = dlm.topology.block(1)
    got = [
        next(row.tokens for row in rows if row.module == block.names[f"expert.{e}.gate"]) for e in range(4)
    ]
    assert got == assigned


def test_gptq_on_an_expert_with_its_own_hessian_is_no_worse_than_rtn() -> None:
    dlm = tiny_moe()
    r = recipe("gptq", "W4A16g16")
    context = block_context(dlm, r, 2, ExpertPolicy())
    names = [n for n in expert_names(dlm) if n.startswith("model.layers.2.")]
    stats = own_hessians(context, names)
    spec = QuantSpec(bits=3, granularity="channel", symmetric=True)
    for name in names:
        weight = dlm.model.get_submodule(name).weight.detach()
        h = stats[name].hessian()
        gptq = layer_objective(weight, gptq_quantize(weight, h, spec, GPTQConfig()).dequantize(), h)
        rtn = layer_objective(weight, rtn_quantize(weight, None, spec).dequantize(), h)
        assert gptq <= rtn * (1 + 1e-6), name


@pytest.mark.parametrize("starved", ["rtn", "shared"])
def test_starved_experts_follow_the_policy(starved: str) -> None:
    dlm = tiny_moe()
    r = recipe("gptq", "W4A16g16")
    policy = ExpertPolicy(min_tokens=10**9, starved=starved)  # every routed expert is starved
    context = block_context(dlm, r, 1, policy, sequential=False)  # one pass: the Hessians seen here
    block = dlm.topology.block(1)
    routed = {block.names[role] for role in block.routes}
    float_weights = {n: dlm.model.get_submodule(n).weight.detach().clone() for n in routed}
    own = own_hessians(context, sorted(routed))
    calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def spy(weight, hessian, spec, config):  # type: ignore[no-untyped-def]
        calls.append((weight.detach().clone(), hessian))
        return gptq_quantize(weight, hessian, spec, config)

    rows = quantize_linears(context, GPTQConfig(), method="gptq", fn=spy)
    spec = context.weight_spec
    for name in routed:
        row = next(row for row in rows if row.module == name)
        quantized = dlm.model.get_submodule(name)
        assert isinstance(quantized, QuantLinear)
        if starved == "rtn":
            assert row.method == "rtn(starved)"
            expected = rtn_quantize(float_weights[name], None, spec).dequantize()
            assert torch.equal(quantized.weight.detach(), expected.to(quantized.weight.dtype))
        else:
            assert row.method == "gptq(starved:shared)"
            part = name.rsplit(".", 1)[1]
            pooled = HessianStats.merge([s for n, s in own.items() if n.endswith(part)]).hessian()
            given = next(h for w, h in calls if torch.equal(w, float_weights[name]))
            torch.testing.assert_close(given, pooled)
    non_routed = [row for row in rows if row.module not in routed]
    assert non_routed and all(row.method == "gptq" for row in non_routed)


def _block_one_feed(dlm: DiffusionLM, r: Recipe, cset):  # type: ignore[no-untyped-def]
    """A feed of float block 1 on the states of ``cset``."""
    runner = BlockRunner(dlm)
    cache = HiddenCache.embed(runner, cset, r.calibration.batch_size).propagate(runner, 0)
    spec = r.scheme.weights.spec()
    model = ModelContext(runner, cset, r.calibration.batch_size, spec, frozenset(), False, ExpertPolicy())
    (_, feed), *_ = list(model.at_block(1, cache).feeds())
    return feed


def test_reserve_states_reach_only_the_reserve_accumulators() -> None:
    dlm = tiny_moe()
    r = recipe("gptq", "W4A16g16")
    cset = prepare_calibration(r.calibration, dlm, r.seed)  # 6 states; the last 2 are the reserve
    block = dlm.topology.block(1)
    routes = {block.names[role]: block.routes[role] for role in block.routes}
    targets = [*sorted(routes), block.names["qkv"]]
    with_reserve = RoutedHessianCollector(routes, reserve_from=4)
    main = collect(_block_one_feed(dlm, r, cset), targets, [with_reserve])["hessian"]
    alone = collect(_block_one_feed(dlm, r, cset.subset(range(4))), targets, [RoutedHessianCollector(routes)])
    full = collect(_block_one_feed(dlm, r, cset), targets, [RoutedHessianCollector(routes)])["hessian"]
    reserve = with_reserve.reserve_results()
    assert set(reserve) <= set(routes) and reserve  # only routed experts keep reserve statistics
    for name in targets:
        assert main[name].tokens == alone["hessian"][name].tokens, name
        torch.testing.assert_close(main[name].sum, alone["hessian"][name].sum)
        extra = reserve.get(name)
        both = main[name] if extra is None else HessianStats.merge([main[name], extra])
        if name in routes:  # main + reserve is every token the router sent the expert
            assert both.tokens == full[name].tokens, name
            torch.testing.assert_close(both.sum, full[name].sum)


def test_targeted_experts_get_their_reserve_tokens() -> None:
    dlm = tiny_moe()
    moe = {"starved": "targeted", "reserve": 6, "min_tokens": 60}
    result = quantize_model(dlm, recipe("gptq", "W4A16g16", moe=moe), progress=False)
    assert result.calibration is not None and result.calibration["num_states"] == 12
    assert any("reserve of starved: targeted" in note for note in result.calibration["notes"])
    routed = [row for row in result.rows if ".experts." in row.module]
    assert routed
    for row in routed:
        if row.tokens >= 60:
            assert row.method == "gptq"
        else:
            assert row.method.startswith("gptq(starved:targeted"), row
    assert any("(+" in row.method for row in routed)  # some starved expert was filled from the reserve
    shared = [row for row in result.rows if "shared_experts" in row.module]
    assert shared and all(row.tokens == 6 * 24 for row in shared)  # dense Hessians skip the reserve


def test_targeted_needs_a_reserve_and_dense_models_ignore_it() -> None:
    with pytest.raises(ValueError, match=r"set moe\.reserve"):
        ExpertPolicy(starved="targeted")
    with pytest.raises(ValueError, match="only applies to starved: targeted"):
        ExpertPolicy(starved="shared", reserve=4)
    r = recipe("gptq", "W4A16g16", moe={"starved": "targeted", "reserve": 4})
    result = quantize_model(load_any("tiny-llada"), r, progress=False)
    assert result.calibration is not None and result.calibration["num_states"] == 6


def test_unknown_starved_policy_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValidationError, match="'shared', 'rtn'"):
        recipe("gptq", "W4A16g16", moe={"starved": "borrow"})
    with pytest.raises(ValueError, match=r"moe\.starved 'x' is unknown"):
        ExpertPolicy(starved="x")


def test_router_stays_float_and_dense_only_steps_are_refused() -> None:
    dlm = tiny_moe()
    routers = {
        n: m.weight.detach().clone() for n, m in dlm.model.named_modules() if isinstance(m, LLaDA2Router)
    }
    quantize_model(dlm, recipe("gptq", "W4A16g16"), progress=False)
    for name, weight in routers.items():
        module = dlm.model.get_submodule(name)
        assert isinstance(module, LLaDA2Router) and torch.equal(module.weight, weight)
    assert not any(isinstance(m, QuantLinear) for n, m in dlm.model.named_modules() if ".mlp.gate." in n)
    with pytest.raises(ValueError, match=r"\['quarot'\].*dllmquant-moe"):
        quantize_model(tiny_moe(), recipe("dllmquant", "W4A16g16"), progress=False)


@pytest.mark.parametrize(
    ("name", "scheme", "calibration"),
    [
        ("gptq", "W4A16g16", RANDOM_CALIBRATION),
        ("dllmquant-moe", "W4A16g16", TMAS_CALIBRATION),
        ("rtn", "W8A8KV16g16", None),
    ],
)
def test_end_to_end_quantized_moe_generates(name: str, scheme: str, calibration: dict | None) -> None:  # type: ignore[type-arg]
    dlm = tiny_moe()
    prompt = torch.tensor([dlm.encode("12+7=")])
    config = BlockDiffusionConfig(gen_length=8, block_length=4, steps=4)
    with torch.no_grad():
        float_out = generate_block(dlm, prompt, config=config, generator=torch.Generator().manual_seed(0))
    result = quantize_model(dlm, recipe(name, scheme, calibration), progress=False)
    for linear in dlm.topology.linear_names():
        module = dlm.model.get_submodule(linear)
        while not isinstance(module, QuantLinear):
            assert not isinstance(module, nn.Linear), linear
            module = module.inner
    with torch.no_grad():
        out = generate_block(dlm, prompt, config=config, generator=torch.Generator().manual_seed(0))
    assert out.shape == float_out.shape and bool((out[:, prompt.shape[1] :] != dlm.mask_token_id).all())
    assert bool(result.coverage) == (name != "rtn")


def test_dllmq_quantize_runs_dllmquant_on_moe_as_its_moe_variant(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``--recipe dllmquant`` on an MoE model says so and runs ``dllmquant-moe`` (the pipeline itself refuses
    dllmquant's QuaRot step there, see above)."""
    save(tiny_moe(max_position_embeddings=512), tmp_path / "float")  # TMAS runs the 256-token sampler
    argv = ["quantize", "--model", str(tmp_path / "float"), "--out", str(tmp_path / "q"), "--no-progress"]
    argv += ["--recipe", "dllmquant", "--scheme", "W4A16g16", "--calib-samples", "4"]
    assert main([*argv, "--eval-problems", "0"]) == 0
    out = capsys.readouterr().out
    assert "recipe 'dllmquant' runs as 'dllmquant-moe'" in out and "with recipe 'dllmquant-moe'" in out
    assert "expert coverage" in out


def test_dllmq_quantize_prints_the_expert_coverage(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    save(tiny_moe(), tmp_path / "float")
    argv = ["quantize", "--model", str(tmp_path / "float"), "--out", str(tmp_path / "q"), "--no-progress"]
    assert main([*argv, "--recipe", "gptq", "--scheme", "W4A16g16", "--calib-samples", "4"]) == 0
    out = capsys.readouterr().out
    assert "expert coverage (calibration tokens per routed expert):" in out
    assert "layer   1: 4 experts, tokens min" in out and "layer   2: 4 experts" in out


@pytest.mark.parametrize("scheme", ["W4A16g16", "W8A8KV16g16"])
def test_a_quantized_llada2_folder_loads_back_and_generates(tmp_path, scheme) -> None:  # type: ignore[no-untyped-def]
    """The pipeline's export of a quantized LLaDA2 is a folder ``load_any`` reads back (packed experts on the
    kernels, each expert's gate/up sharing one GEMM) with the logits of the quantized model in memory (in
    float32; W8A8KV16 runs integer GEMMs where the model in memory fake-quantizes); the block sampler
    generates from it."""
    dlm = tiny_moe()
    save(dlm, tmp_path / "float")
    quantized = quantize_model(dlm, recipe("gptq", scheme), progress=False)
    folder = export_model(quantized, tmp_path / "q")
    loaded = load_any(folder)
    groups = shared_input_groups(loaded.model)
    assert groups and all("shared_input_gemm" in loaded.model.get_submodule(g[0]).__dict__ for g in groups)
    set_compute_dtype(loaded.model, torch.float32)  # the in-memory model computes in float32
    ids = torch.randint(0, 60, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = quantized.dlm.model(ids), loaded.model(ids)
    if scheme.startswith("W4A16"):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (got - want).abs().max()
    else:  # integer GEMMs against fake quantization: a float difference can move an activation code by one
        assert float(torch.linalg.norm(got - want) / torch.linalg.norm(want)) < 1e-2
    prompt = ids[:1, :5]
    out = generate_block(loaded, prompt, config=BlockDiffusionConfig(gen_length=8, steps=8, block_length=4))
    assert bool((out[:, prompt.shape[1] :] != loaded.mask_token_id).all())
