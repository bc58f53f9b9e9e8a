"""Where a packed weight-only layer's CPU time goes, inside a whole model: ms per forward against float32.

Run with ``uv run pytest benchmarks/suites/test_bench_cpu_breakdown.py --benchmark-enable -s`` (the root
config disables benchmarks and does not collect this folder by default). Each shipped tiny model is
quantized with RTN at W8A16 and W4A16 (g128), exported and loaded back, then three variants of every
quantized model are timed in interleaved rounds against the float32 model (80-token forwards):

* ``packed``: the checkpoint as a user runs it (per call: dequantize the packed tile, bf16 GEMM);
* ``bf16 kept``: the same layers with their dequantized bf16 weights kept between calls, so no call
  dequantizes: the cost of the bf16 GEMMs and the layer code alone (a lower bound for any per-call
  dequantization; it holds 16 bits per weight, so it is a measurement, not a mode);
* ``bf16 kept + empty launch``: as above plus one empty parallel Numba launch per call: what starting a
  tile kernel costs.

A second test does the same for the attention sites of an int8 model (RTN W8A8ch: per-channel weights,
per-token activations, Q/K/V quantized), as loaded (RoPE and the Q/K quantization in one Numba launch,
``QKQuant.rope_runner``), with that runner switched off (torch RoPE, then the Q/K quantization), and the
same weights with Q/K/V in float (``W8A8KV16ch``).

A third test times the float32 tile path's GEMM order at tiny-dream's layer shapes (80 tokens): a float32
``F.linear`` on a kept weight, and after each call's dequantization ``F.linear(x, tile)`` (the order used
before) against ``ops.tile_matmul`` (``tile @ x^T`` and a transposition, the order in use), plus the
dequantization alone. A fourth times tiny-llada2's routed experts with and without their `ExpertsGEMM`.

Two more time the integer GEMMs (on CPUs with AVX512-VNNI; skipped elsewhere): at tiny-dream's layer
shapes, `WeightStack.int_matmul` through the VNNI kernel (`dllm_kernels.cpu.vnni`, in use) and through
the fallback (``torch._int_mm`` per group and a separate epilogue), against a float32 ``F.linear``; and
whole int8 models (RTN W8A8 g128, W4A4 g128, W8A8ch) with and without the kernel against float32.

The printed ratios are medians over rounds of (variant ms / first variant's ms in the same round). Nothing
is asserted about speed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dllm_actquant import QKQuant
from dllm_bench.cli import main
from dllm_bench.loading import load_any
from dllm_kernels import dispatch
from dllm_kernels.cpu import vnni
from dllm_kernels.cpu.ops import PackedWeight, WeightStack, tile_matmul
from dllm_sampler import DiffusionLM, available_models
from dllm_sampler.models.layers import ConcatenatedBias, add_bias
from dllm_sampler.models.spec import routed_experts
from dllm_weightquant.qlinear import QuantLinear
from torch import Tensor

ROUNDS, CALLS, TOKENS = 15, 20, 80


@numba.njit(parallel=True, cache=True)
def _empty_launch(a: np.ndarray) -> None:
    for c in numba.prange(a.shape[0]):
        a[c] += 1.0


class _Kept:
    """A quantized layer (or shared-input group) replaced by its dequantized bf16 weight, kept."""

    def __init__(self, layers: tuple[QuantLinear, ...], launch: bool) -> None:
        stack = WeightStack.of([m.cpu_weight() for m in layers])
        tile = np.empty((stack.out_features, stack.in_features), dtype=np.uint16)
        stack.dequantize_into(tile)
        self.weight = torch.from_numpy(tile).view(torch.bfloat16)
        self.bias = ConcatenatedBias()([m.bias for m in layers], [m.out_features for m in layers])
        self.splits = [m.out_features for m in layers]
        self.layers = layers
        self.scratch = np.zeros(16) if launch else None

    def run(self, h: Tensor) -> tuple[Tensor, ...]:
        if self.scratch is not None:
            _empty_launch(self.scratch)
        y = F.linear(h.reshape(-1, h.shape[-1]).to(torch.bfloat16), self.weight)
        y = add_bias(y, self.bias, h.dtype)
        return y.view(*h.shape[:-1], y.shape[-1]).split(self.splits, dim=-1)

    def __call__(self, h: Tensor, linears: tuple) -> tuple[Tensor, ...]:  # a shared-input runner
        return self.run(h)


def _keep_weights(dlm: DiffusionLM, launch: bool) -> DiffusionLM:
    grouped = set()
    for module in dlm.model.modules():
        runner = module.__dict__.get("shared_input_gemm")
        if runner is not None:
            module.shared_input_gemm = _Kept(runner.layers, launch)
            grouped.update(runner.layers)
    for module in dlm.model.modules():
        if isinstance(module, QuantLinear) and module.mode == "kernel" and module not in grouped:
            kept = _Kept((module,), launch)
            module.forward = lambda x, kept=kept: kept.run(x)[0]
    return dlm


def _ratios(models: dict[str, Callable[[], object]]) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for forward in models.values():
            for _ in range(5):
                forward()
        for _ in range(ROUNDS):
            for name, forward in models.items():
                start = time.perf_counter()
                for _ in range(CALLS):
                    forward()
                times[name].append((time.perf_counter() - start) / CALLS)
    base = times[next(iter(models))]
    return {name: statistics.median(a / b for a, b in zip(t, base, strict=True)) for name, t in times.items()}


def _without_rope_runner(dlm: DiffusionLM) -> DiffusionLM:
    """``dlm`` with every Q/K quantizer's fused RoPE runner switched off (RoPE in torch, then the site)."""
    for module in dlm.model.modules():
        if isinstance(module, QKQuant):
            module.rope_runner = None
    return dlm


def _quantized(name: str, scheme: str, tmp_path: Path) -> Path:
    folder = tmp_path / scheme
    argv = ["quantize", "--model", name, "--recipe", "rtn", "--scheme", scheme, "--out", str(folder)]
    assert main([*argv, "--no-progress"]) == 0
    return folder


def _breakdown(benchmark, name: str, variants: dict[str, DiffusionLM]) -> None:
    """Time ``variants`` against ``name`` in float32 (80-token forwards) and print the ratios."""
    ids = torch.randint(5, 100, (1, TOKENS), generator=torch.Generator().manual_seed(0))
    float32 = load_any(name, dtype=torch.float32)
    models: dict[str, Callable[[], object]] = {"float32": lambda: float32.logits(ids)}
    models.update({label: lambda dlm=dlm: dlm.logits(ids) for label, dlm in variants.items()})
    ratios = benchmark.pedantic(_ratios, args=(models,), rounds=1, iterations=1)
    _print(benchmark, f"{name}: ms per {TOKENS}-token forward / float32's, median of {ROUNDS} rounds", ratios)


def _print(benchmark, title: str, ratios: dict[str, float] | None) -> None:
    """Print ``ratios`` under ``title`` and record them in the benchmark's extra info."""
    if ratios is None:  # --benchmark-disable
        return
    print(f"\n{title}")
    for label, ratio in ratios.items():
        print(f"  {label:52s} {ratio:.3f}")
    benchmark.extra_info.update({label: round(r, 4) for label, r in ratios.items()})
    assert all(r > 0 for r in ratios.values())


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_packed_layer_cost_breakdown(benchmark, tmp_path: Path, name: str) -> None:
    if name not in available_models():
        pytest.skip(f"{name} is not shipped")
    variants = {}
    for scheme in ("W8A16", "W4A16"):
        folder = _quantized(name, scheme, tmp_path)
        variants[f"{scheme} packed"] = load_any(folder)
        variants[f"{scheme} bf16 kept"] = _keep_weights(load_any(folder), launch=False)
        variants[f"{scheme} bf16 kept + empty launch"] = _keep_weights(load_any(folder), launch=True)
    _breakdown(benchmark, name, variants)


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_attention_site_cost_breakdown(benchmark, tmp_path: Path, name: str) -> None:
    if name not in available_models():
        pytest.skip(f"{name} is not shipped")
    w8a8 = _quantized(name, "W8A8ch", tmp_path)
    variants = {
        "W8A8ch (RoPE + Q/K quantization fused)": load_any(w8a8),
        "W8A8ch (torch RoPE, then Q/K quantization)": _without_rope_runner(load_any(w8a8)),
        "W8A8KV16ch (Q/K/V float)": load_any(_quantized(name, "W8A8KV16ch", tmp_path)),
    }
    _breakdown(benchmark, name, variants)


@pytest.mark.parametrize(("n", "k"), [(512, 256), (1536, 256), (256, 768)])
def test_float32_tile_gemm_order(benchmark, n: int, k: int) -> None:
    """q/k/v, gate/up and down of tiny-dream at 4 bits, g128, float32 tiles."""
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=gen)
    weight = PackedWeight.from_tensors(
        dispatch.pack(codes, 4), torch.rand(n, k // 128, generator=gen) + 0.5, None, 4, 128, k
    ).stack
    x, kept = torch.randn(TOKENS, k, generator=gen), torch.randn(n, k, generator=gen)
    calls = {
        "float32 F.linear, kept weight": lambda: F.linear(x, kept),
        "dequantize + F.linear(x, tile) (before)": lambda: F.linear(
            x, weight.dequantized(0, n, torch.float32)
        ),
        "dequantize + tile_matmul (tile @ x^T, in use)": lambda: tile_matmul(
            x, weight.dequantized(0, n, torch.float32)
        ),
        "dequantize alone": lambda: weight.dequantized(0, n, torch.float32),
    }
    ratios = benchmark.pedantic(_ratios, args=(calls,), rounds=1, iterations=1)
    _print(benchmark, f"[{TOKENS}, {k}] x [{n}, {k}]^T: ms / float32 F.linear's, {ROUNDS} rounds", ratios)


@pytest.mark.parametrize("scheme", ["W8A16", "W4A16"])
def test_routed_experts_runner(benchmark, tmp_path: Path, scheme: str) -> None:
    if "tiny-llada2" not in available_models():
        pytest.skip("tiny-llada2 is not shipped")
    fused = load_any(_quantized("tiny-llada2", scheme, tmp_path))
    alone = load_any(tmp_path / scheme)
    for path, _ in routed_experts(alone.model):
        del alone.model.get_submodule(path).experts_gemm
    _breakdown(
        benchmark,
        "tiny-llada2",
        {f"{scheme} experts one by one": alone, f"{scheme} ExpertsGEMM (as loaded)": fused},
    )


needs_vnni = pytest.mark.skipif(not vnni.available(), reason="no AVX512-VNNI on this CPU (or Numba's target)")


def _without_vnni(run: Callable[[], object]) -> None:
    """Call ``run`` once with the VNNI kernel reported unavailable: the weight stacks it builds (each caches
    its choice on first use) keep the ``torch._int_mm`` fallback."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vnni, "available", lambda: False)
        run()


@needs_vnni
@pytest.mark.parametrize("group", [128, None])
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize(("n", "k"), [(512, 256), (1536, 256), (256, 768)])
def test_integer_gemm_kernels(benchmark, n: int, k: int, bits: int, group: int | None) -> None:
    """q/k/v, gate/up and down of tiny-dream: the integer GEMM with and without the VNNI kernel."""
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 1 << bits, (n, k), dtype=torch.uint8, generator=gen)
    scale = torch.rand(n, k // (group or k), generator=gen) + 0.5
    weight = PackedWeight.from_tensors(dispatch.pack(codes, bits), scale, None, bits, group, k)
    kernel, fallback = WeightStack.of([weight]), WeightStack.of([weight])
    x, kept = torch.randn(TOKENS, k, generator=gen), torch.randn(n, k, generator=gen)
    xq, xs, _ = dispatch.quantize_per_token(x, 8)
    _without_vnni(lambda: fallback.int_matmul(xq, xs))
    calls = {
        "float32 F.linear, kept weight": lambda: F.linear(x, kept),
        "VNNI kernel (in use)": lambda: kernel.int_matmul(xq, xs),
        "torch._int_mm per group + epilogue (fallback)": lambda: fallback.int_matmul(xq, xs),
    }
    ratios = benchmark.pedantic(_ratios, args=(calls,), rounds=1, iterations=1)
    shape = f"W{bits}A8 {'g' + str(group) if group else 'per-channel'} [{TOKENS}, {k}] x [{n}, {k}]^T"
    _print(benchmark, f"{shape}: ms / float32 F.linear's, {ROUNDS} rounds", ratios)


@needs_vnni
@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_integer_models_with_and_without_vnni(benchmark, tmp_path: Path, name: str) -> None:
    ids = torch.randint(5, 100, (1, TOKENS), generator=torch.Generator().manual_seed(0))
    variants = {}
    for scheme in ("W8A8", "W4A4", "W8A8ch"):
        folder = _quantized(name, scheme, tmp_path)
        fallback = load_any(folder)
        _without_vnni(lambda dlm=fallback: dlm.logits(ids))
        variants[f"{scheme} VNNI kernel (in use)"] = load_any(folder)
        variants[f"{scheme} torch._int_mm per group (fallback)"] = fallback
    _breakdown(benchmark, name, variants)
