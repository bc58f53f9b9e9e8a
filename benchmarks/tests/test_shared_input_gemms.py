"""Loaded quantized checkpoints run q/k/v and gate/up as one GEMM on the CPU (`dllm_weightquant.fuse`,
`dllm_actquant.fuse`), with the numbers of the layers run one by one: bit for bit on the integer path, up
to the float GEMM's accumulation order on the weight-only path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dllm_actquant.fuse import SharedInputIntGEMM
from dllm_bench.cli import main
from dllm_bench.loading import load_any
from dllm_sampler import save
from dllm_sampler.models.layers import linears_on
from dllm_sampler.models.spec import shared_input_groups
from dllm_sampler.testing import random_char_model
from dllm_weightquant.fuse import SharedInputGEMM


def _quantized(tmp: Path, arch: str, scheme: str) -> Path:
    save(random_char_model(arch), tmp / "float")
    argv = ["quantize", "--model", str(tmp / "float"), "--out", str(tmp / "q"), "--no-progress"]
    assert main([*argv, "--recipe", "rtn", "--scheme", scheme]) == 0
    return tmp / "q"


def _runners(model: torch.nn.Module) -> list[object]:
    """The runner of each shared-input group (None where a group has none)."""
    return [model.get_submodule(g[0]).__dict__.get("shared_input_gemm") for g in shared_input_groups(model)]


def _logits_one_by_one(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    runners = {
        m: m.__dict__.pop("shared_input_gemm") for m in model.modules() if hasattr(m, "shared_input_gemm")
    }
    try:
        return model(ids)
    finally:
        for m, r in runners.items():
            m.shared_input_gemm = r


@pytest.mark.parametrize(
    ("arch", "scheme", "runner", "exact"),
    [
        ("llada", "W4A16g16", SharedInputGEMM, False),
        ("dream", "W8A16g16", SharedInputGEMM, False),  # q/k/v biases
        ("llada", "W8A8KV16ch", SharedInputIntGEMM, True),
        ("dream", "W8A8KV16g16", SharedInputIntGEMM, True),
        ("llada", "W8A8ch", SharedInputIntGEMM, True),  # v's output quantized (VQuantOutput in the group)
        ("dream", "W8A8g16", SharedInputIntGEMM, True),
    ],
)
def test_loaded_checkpoints_share_one_gemm_per_input(tmp_path: Path, arch, scheme, runner, exact) -> None:
    dlm = load_any(_quantized(tmp_path, arch, scheme))
    model = dlm.model
    runners = _runners(model)
    assert runners and all(isinstance(r, runner) for r in runners)
    ids = torch.randint(0, dlm.config.vocab_size - 8, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fused, alone = model(ids), _logits_one_by_one(model, ids)
    if exact:
        assert torch.equal(fused, alone)
    else:
        assert torch.allclose(fused, alone, rtol=1e-5, atol=1e-5), (fused - alone).abs().max()


def test_a_hooked_layer_runs_alone(rtn_folders: tuple[Path, Path]) -> None:
    """A forward hook on any member (calibration, activation capture) makes the runner step aside, so the
    hook sees its call; other layers and other devices are refused too."""
    model = load_any(rtn_folders[1]).model
    names = shared_input_groups(model)[0]
    layers = tuple(model.get_submodule(n) for n in names)
    runner = layers[0].shared_input_gemm
    h = torch.randn(1, 3, layers[0].in_features)
    assert runner(h, layers) is not None
    assert runner(h, layers[::-1]) is None
    seen = []
    handle = layers[1].register_forward_hook(lambda *_: seen.append(1))
    try:
        assert runner(h, layers) is None
        linears_on(h, layers)
    finally:
        handle.remove()
    assert seen == [1]


def test_a_hook_inside_a_quantized_v_output_makes_the_runner_step_aside(tmp_path: Path) -> None:
    """v's `VQuantOutput` joins the q/k/v GEMM through the layer it wraps; a hook on that layer (or on
    the wrapper) still sees its call."""
    model = load_any(_quantized(tmp_path, "llada", "W8A8ch")).model
    layers = tuple(model.get_submodule(n) for n in shared_input_groups(model)[0])
    runner = layers[0].shared_input_gemm
    h = torch.randn(1, 3, layers[0].in_features)
    assert runner(h, layers) is not None
    for hooked in (layers[2], layers[2].inner, layers[2].inner.inner):
        handle = hooked.register_forward_hook(lambda *_: None)
        try:
            assert runner(h, layers) is None
        finally:
            handle.remove()


def test_the_runner_sees_a_changed_bias_and_a_moved_weight(tmp_path: Path) -> None:
    """The runner keeps its concatenated bias and its weight stack between calls: a bias changed in place
    and a layer moved (a new prepared weight) are seen at the next call."""
    model = load_any(_quantized(tmp_path, "dream", "W8A16g16")).model
    names = shared_input_groups(model)[0]  # q/k/v, with biases
    layers = tuple(model.get_submodule(n) for n in names)
    runner = layers[0].shared_input_gemm
    h = torch.randn(1, 3, layers[0].in_features)
    with torch.no_grad():
        runner(h, layers)
        layers[1].bias.add_(1.0)
        layers[2].float()  # _apply: the layer prepares its CPU weight anew
        got = runner(h, layers)
        want = tuple(m(h) for m in layers)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
