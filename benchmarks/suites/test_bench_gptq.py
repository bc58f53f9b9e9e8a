"""GPTQ wall time on CPU, and side by side with llm-compressor when the optional ``peers`` group is installed.

Not part of the normal test run (``benchmarks/suites`` is outside ``testpaths``). Run it with

    uv run pytest benchmarks/suites/test_bench_gptq.py -s

Layers are weights ``[out, in]`` of LLaDA-8B shapes: 4096x4096 (q/k/v/o) and 4096x12288 (the FFN down
projection ``ff_out``, whose Hessian is 12288x12288). ``DLLMQ_BENCH_GPTQ_SHAPES="512x512,512x1536"`` overrides
the shapes (e.g. for a quick check). The Hessian is synthetic but realistic in structure:
``H = D (C + L L^T / r) D``
with an AR(1) correlation ``C_ij = 0.6^|i-j|``, a rank-64 term and log-normal channel scales ``D`` (outlier
channels), built in O(in^2) instead of from activations. Settings: 4-bit symmetric, group 128, static
act-order, damping 0.01, block 128.

The peer comparison quantizes the same weight against the same Hessian with llm-compressor's
``quantize_weight`` (the >= 0.14 batched signature; other versions are skipped with the reason) and prints the
time and objective ratios ``ours / theirs``, where the objective is ``tr((W - Q) H (W - Q)^T)``.
llm-compressor
computes every group scale from the original weight before the sweep (static groups), ours when GPTQ reaches
the group, so the objectives differ slightly. gptqmodel's layer-level GPTQ needs its model wrappers and
QuantizeConfig; no adapter is provided, and the test says so when gptqmodel is the only peer installed.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable

import dllm_kernels
import pytest
import torch
from dllm_kernels import QuantSpec
from dllm_weightquant import GPTQConfig, gptq_quantize, layer_objective, rtn_quantize

SPEC = QuantSpec(4, True, "group", 128)
CONFIG = GPTQConfig(block_size=128, damp_percent=0.01, actorder="static")


def _shapes() -> list[tuple[int, int]]:
    text = os.environ.get("DLLMQ_BENCH_GPTQ_SHAPES", "4096x4096,4096x12288")
    return [(int(a), int(b)) for a, b in (item.lower().split("x") for item in text.split(","))]


def synthetic_layer(out: int, inp: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight ``[out, in]`` float32 (N(0, 0.02)) and a positive definite Hessian ``[in, in]`` float64."""
    g = torch.Generator().manual_seed(seed)
    w = 0.02 * torch.randn(out, inp, generator=g)
    idx = torch.arange(inp, dtype=torch.float64)
    h = 0.6 ** (idx[:, None] - idx[None, :]).abs()
    low = torch.randn(inp, 64, generator=g, dtype=torch.float64)
    h += low @ low.T / 64
    d = torch.exp(0.5 * torch.randn(inp, generator=g, dtype=torch.float64))
    h *= d[:, None] * d[None, :]
    return w, h


def _timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


@pytest.fixture(scope="module", params=_shapes(), ids=lambda s: f"{s[0]}x{s[1]}")
def layer(request: pytest.FixtureRequest) -> tuple[torch.Tensor, torch.Tensor]:
    return synthetic_layer(*request.param)


def test_gptq_wall_time(layer: tuple[torch.Tensor, torch.Tensor]) -> None:
    w, h = layer
    q, seconds = _timed(lambda: gptq_quantize(w, h, SPEC, CONFIG).dequantize())
    objective = layer_objective(w, q, h)
    rtn = layer_objective(w, rtn_quantize(w, None, SPEC).dequantize(), h)
    print(
        f"\nGPTQ {w.shape[0]}x{w.shape[1]} W4 g128 static act-order on CPU "
        f"({torch.get_num_threads()} threads): "
        f"{seconds:.2f} s; objective {objective:.5g} (RTN {rtn:.5g}, ratio {objective / rtn:.3f})"
    )
    assert objective <= rtn


def _llmcompressor_gptq() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(w, h) -> fake-quantized weight`` through llm-compressor's GPTQ, or skip with the reason."""
    try:
        from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight
    except ImportError as e:
        if _importable("gptqmodel"):
            pytest.skip("only gptqmodel is installed; this suite has no adapter for its layer-level GPTQ API")
        pytest.skip(f"llmcompressor is not importable (install the optional 'peers' dependency group): {e}")
    params = list(inspect.signature(quantize_weight).parameters)
    expected = [
        "weights",
        "hessians",
        "scale",
        "zero_point",
        "global_scale",
        "quant_args",
        "blocksize",
        "percdamp",
    ]
    if params[: len(expected)] != expected:
        pytest.skip(
            f"unsupported llmcompressor quantize_weight signature {params}; the adapter targets >= 0.14"
        )

    def run(w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        # llm-compressor's min/max observer: the grid of dllm_kernels.quantize (compressed-tensors' rules),
        # with the signed zero point compressed-tensors uses
        _, scale, zero = dllm_kernels.quantize(w, SPEC)
        half = 1 << (SPEC.bits - 1)
        zp = torch.zeros_like(scale, dtype=torch.int8) if zero is None else (zero - half).to(torch.int8)
        args = SPEC.to_compressed_tensors().model_copy(update={"actorder": "static"})
        q, _, fallback = quantize_weight(
            w[None].clone(),
            h[None].float(),
            scale[None],
            zp[None],
            None,
            args,
            CONFIG.block_size,
            CONFIG.damp_percent,
        )
        assert not bool(fallback.any()), "llm-compressor fell back to RTN"
        return q[0]

    return run


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def test_side_by_side_with_llmcompressor(layer: tuple[torch.Tensor, torch.Tensor]) -> None:
    theirs_fn = _llmcompressor_gptq()
    w, h = layer
    ours, t_ours = _timed(lambda: gptq_quantize(w, h, SPEC, CONFIG).dequantize())
    theirs, t_theirs = _timed(lambda: theirs_fn(w, h))
    obj_ours, obj_theirs = layer_objective(w, ours, h), layer_objective(w, theirs.float(), h)
    print(
        f"\n{w.shape[0]}x{w.shape[1]}: dllm_weightquant {t_ours:.2f} s, llm-compressor {t_theirs:.2f} s "
        f"(time ratio {t_ours / t_theirs:.2f}); objective {obj_ours:.5g} vs {obj_theirs:.5g} "
        f"(ratio {obj_ours / obj_theirs:.4f})"
    )
    assert obj_ours <= 1.05 * obj_theirs
