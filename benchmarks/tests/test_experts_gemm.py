"""Loaded quantized mixture-of-experts checkpoints run the routed experts of a layer through one
dequantization launch per run of experts on the CPU (`dllm_weightquant.fuse.ExpertsGEMM`), with the
numbers of the experts run one by one, bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dllm_bench.cli import main
from dllm_bench.loading import load_any
from dllm_sampler import save
from dllm_sampler.models.layers import experts_on
from dllm_sampler.models.spec import arch_spec, routed_experts
from dllm_sampler.testing import CHAR_VOCAB, char_tokenizer, random_llada2
from dllm_weightquant import fuse, set_compute_dtype
from dllm_weightquant.fuse import ExpertsGEMM, fuse_experts

SPECIALS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "mask_token_id": 3}


def _quantized_moe(tmp: Path, scheme: str, experts: int = 6) -> Path:
    """A random LLaDA2 (a dense first layer, two routed layers of ``experts`` experts, top-2, a shared
    expert) quantized by ``dllmq quantize --recipe rtn``."""
    vocab = dict.fromkeys(arch_spec("llada2").config_cls.VOCAB_KEYS, CHAR_VOCAB)
    dlm = random_llada2(
        0, first_k_dense_replace=1, num_hidden_layers=3, num_experts=experts, **vocab, **SPECIALS
    )
    dlm.tokenizer = char_tokenizer()
    save(dlm, tmp / "float")
    argv = ["quantize", "--model", str(tmp / "float"), "--out", str(tmp / "q"), "--no-progress"]
    assert main([*argv, "--recipe", "rtn", "--scheme", scheme]) == 0
    return tmp / "q"


def _experts_lists(model: torch.nn.Module) -> list[torch.nn.ModuleList]:
    return [model.get_submodule(path) for path, _ in routed_experts(model)]


def _one_by_one(experts: torch.nn.ModuleList, xs: list[torch.Tensor], ids: list[int]) -> list[torch.Tensor]:
    return [experts[e](x) for e, x in zip(ids, xs, strict=True)]


@pytest.fixture(scope="module")
def moe_w4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _quantized_moe(tmp_path_factory.mktemp("moe-w4"), "W4A16g16")


@pytest.fixture(scope="module")
def moe_w8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _quantized_moe(tmp_path_factory.mktemp("moe-w8"), "W8A16g16")


@pytest.mark.parametrize("compute_dtype", [None, torch.float32])
def test_loaded_moe_logits_equal_the_experts_run_one_by_one(moe_w4: Path, compute_dtype, monkeypatch) -> None:
    model = load_any(moe_w4).model
    set_compute_dtype(model, compute_dtype)
    lists = _experts_lists(model)
    assert len(lists) == 2 and all(isinstance(m.experts_gemm, ExpertsGEMM) for m in lists)
    served = []
    call = ExpertsGEMM.__call__
    monkeypatch.setattr(ExpertsGEMM, "__call__", lambda self, *a: served.append(call(self, *a)) or served[-1])
    ids = torch.randint(0, 40, (2, 13), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fused = model(ids)
        assert len(served) == 2 and all(out is not None for out in served)
        runners = [m.__dict__.pop("experts_gemm") for m in lists]
        alone = model(ids)
    for m, r in zip(lists, runners, strict=True):
        m.experts_gemm = r
    assert torch.equal(fused, alone)


@pytest.mark.parametrize("small_tiles", [False, True])
@pytest.mark.parametrize("checkpoint", ["moe_w4", "moe_w8"])
def test_runs_of_experts_with_gaps_and_small_tiles(request, checkpoint, monkeypatch, small_tiles) -> None:
    """Any ascending subset of experts, with gaps (separate runs) and with tiles so small that every run
    holds one expert, gives each expert's own output, for 4-bit and 8-bit weights."""
    experts = _experts_lists(load_any(request.getfixturevalue(checkpoint)).model)[0]
    runner = experts.experts_gemm
    if small_tiles:
        monkeypatch.setattr(fuse, "TILE_BYTES", 2 * runner.width * runner.hidden * 2)  # one bf16 expert
    gen = torch.Generator().manual_seed(1)
    for ids in ([0, 1, 2, 3, 4, 5], [1, 2, 4], [5], [0, 3, 4, 5]):
        xs = [
            torch.randn(int(torch.randint(1, 6, (1,), generator=gen)), runner.hidden, generator=gen)
            for _ in ids
        ]
        with torch.no_grad():
            got, want = runner(xs, ids), _one_by_one(experts, xs, ids)
        assert len(got) == len(ids)
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)
    assert runner([], []) == []


def test_the_run_split_follows_the_tile_size(moe_w4: Path, monkeypatch) -> None:
    runner = _experts_lists(load_any(moe_w4).model)[0].experts_gemm
    per_expert = 2 * runner.width * runner.hidden * 2  # bf16 gate and up rows of one expert
    monkeypatch.setattr(fuse, "TILE_BYTES", 2 * per_expert)
    assert runner._runs([0, 1, 2, 4, 5], 2) == [[0, 1], [2], [4, 5]]
    assert runner._runs([0, 1, 2, 4, 5], 4) == [[0], [1], [2], [4], [5]]
    monkeypatch.setattr(fuse, "TILE_BYTES", 1 << 30)
    assert runner._runs([0, 1, 2, 4, 5], 2) == [[0, 1, 2], [4, 5]]


def test_a_hook_on_an_expert_or_its_linears_makes_the_runner_step_aside(moe_w4: Path) -> None:
    experts = _experts_lists(load_any(moe_w4).model)[0]
    runner = experts.experts_gemm
    xs, ids = [torch.randn(3, runner.hidden), torch.randn(2, runner.hidden)], [1, 3]
    assert runner(xs, ids) is not None
    for hooked in (experts[4], experts[4].down_proj, experts[0].gate_proj):
        seen: list[int] = []
        handle = hooked.register_forward_hook(lambda *_, seen=seen: seen.append(1))
        try:
            assert runner(xs, ids) is None
            experts_on(xs, experts, [0, 4])
        finally:
            handle.remove()
        assert seen == [1]


def test_the_runner_sees_a_moved_weight(moe_w4: Path) -> None:
    experts = _experts_lists(load_any(moe_w4).model)[0]
    runner = experts.experts_gemm
    xs, ids = [torch.randn(3, runner.hidden)], [2]
    with torch.no_grad():
        runner(xs, ids)
        old = runner._stacks()
        experts[2].up_proj.float()  # _apply: the layer prepares its CPU weight anew
        assert runner._stacks()[0] is not old[0]
        assert torch.equal(runner(xs, ids)[0], experts[2](xs[0]))


def test_only_quantized_moe_layers_get_a_runner(
    moe_w4: Path, rtn_folders: tuple[Path, Path], tmp_path: Path
) -> None:
    """Float experts and dense models get no runner; integer (W8A8) experts, whose linears the loader
    wraps in input quantizers after the weight-only loader attached a runner, are declined by it (the
    runner checks that the experts still hold its linears) and run one by one."""
    assert fuse_experts(load_any(moe_w4.parent / "float").model) == 0
    assert fuse_experts(load_any(rtn_folders[1]).model) == 0
    experts = _experts_lists(load_any(_quantized_moe(tmp_path, "W8A8KV16ch")).model)[0]
    runner = experts.__dict__.get("experts_gemm")
    if runner is not None:
        assert runner([torch.randn(2, runner.hidden)], [0]) is None
