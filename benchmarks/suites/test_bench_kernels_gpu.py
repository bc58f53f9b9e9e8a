"""GPU benchmark: the dllm_kernels Triton kernels against bf16 ``torch.matmul`` on LLaDA-8B / Dream-7B shapes.

Run on a CUDA machine (skipped without one)::

    uv run pytest benchmarks/suites/test_bench_kernels_gpu.py -s

For every linear-layer shape of docs/references.md#kernels (weight ``[N, K]``; the lm_heads are left out: they
usually stay bf16) and every M in ``DLLM_BENCH_M`` (default 32,256,1024,2048) it first checks each kernel's
output against a float32 reference (relative Frobenius error <= 1e-2, the bf16-output band), then times it
with ``triton.testing.do_bench`` (median; L2 flushed before every run) in the same process as the bf16
baseline. Reported numbers are **time ratios** ``t_kernel / t_bf16_matmul`` (lower is faster; < 1 beats
bf16); memory-bound ops (activation quantization, fused Hadamard + quantization) additionally get their ratio
to ``x.clone()`` of the same activation. The table is printed and written as markdown, with the GPU name,
to ``DLLM_BENCH_OUT`` (default ``docs/benchmarks/kernels.md``). ``DLLM_BENCH_SHAPES`` (comma-separated ids,
e.g. ``L-o,D-o``) restricts the shapes. The first call of each kernel autotunes it; that call is outside
the timing.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; runs on the GPU machine"),
]

# id: (N, K) of the weight [out, in], docs/references.md#kernels
SHAPES: dict[str, tuple[int, int]] = {
    "L-qkv": (12288, 4096),
    "L-o": (4096, 4096),
    "L-gu": (24576, 4096),
    "L-down": (4096, 12288),
    "D-qkv": (4608, 3584),
    "D-o": (3584, 3584),
    "D-gu": (37888, 3584),
    "D-down": (3584, 18944),
}
GROUP = 128
ERROR_BAND = 1e-2
REPO = Path(__file__).resolve().parents[2]

Case = tuple[Callable[[], object], Callable[[], torch.Tensor], torch.Tensor | None]
"""(timed call, call returning the output to check, float32 reference or None for no check)."""

RESULTS: dict[tuple[int, str, str], float] = {}  # (M, shape id, row) -> time ratio
FAILURES: list[str] = []


def _env_list(name: str, default: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


def m_sweep() -> list[int]:
    return [int(v) for v in _env_list("DLLM_BENCH_M", "32,256,1024,2048")]


def shape_ids() -> list[str]:
    chosen = _env_list("DLLM_BENCH_SHAPES", ",".join(SHAPES))
    unknown = sorted(set(chosen) - set(SHAPES))
    if unknown:
        raise ValueError(f"DLLM_BENCH_SHAPES has unknown ids {unknown}; known: {sorted(SHAPES)}")
    return chosen


def median_ms(fn: Callable[[], object]) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def rel_fro(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref).norm() / ref.norm())


def _weights(n: int, k: int, bits: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random symmetric ``bits``-bit codes: (int8 codes [N, K], packed int32) on CUDA."""
    from dllm_kernels import reference as ref

    codes = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(n, k)).astype(np.int8)
    return torch.from_numpy(codes).cuda(), torch.from_numpy(ref.pack(codes, bits)).cuda()


def build_cases(m: int, n: int, k: int) -> dict[str, Case]:
    """Every benchmarked op on one (M, N, K): bf16 activations, per-group bf16 scales, int8 paths."""
    from dllm_kernels import dispatch

    rng = np.random.default_rng(m * 7 + n + k)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    cases: dict[str, Case] = {}
    for bits in (4, 3, 2, 8):
        codes, packed = _weights(n, k, bits, rng)
        scale = (torch.rand(n, k // GROUP, device="cuda") + 0.5).to(torch.bfloat16) / (1 << bits)
        w = codes.float() * scale.float().repeat_interleave(GROUP, dim=1)

        def wna16(x=x, packed=packed, scale=scale, bits=bits) -> torch.Tensor:
            return dispatch.wna16_gemm(x, packed, scale, None, bits, GROUP)

        cases[f"W{bits}A16 g{GROUP}"] = (wna16, wna16, x.float() @ w.T)

    xq, xs, _ = dispatch.quantize_per_token(x, 8)
    ws = torch.rand(n, device="cuda") / 127
    wq, _ = _weights(n, k, 8, rng)
    x_deq = xq.float() * xs[:, None]
    w8_ref = x_deq @ (wq.float() * ws[:, None]).T

    def w8a8() -> torch.Tensor:
        return dispatch.int8_gemm(xq, xs, wq, ws, out_dtype=torch.bfloat16)

    def w8a8_dynamic() -> torch.Tensor:
        q, s, _ = dispatch.quantize_per_token(x, 8)
        return dispatch.int8_gemm(q, s, wq, ws, out_dtype=torch.bfloat16)

    wq_t = wq.t()  # [K, N] column-major view: the layout torch._int_mm wants for its second operand

    def int_mm() -> torch.Tensor:
        return (torch._int_mm(xq, wq_t).float() * xs[:, None] * ws[None, :]).to(torch.bfloat16)

    cases["W8A8 int8 (GEMM)"] = (w8a8, w8a8, w8_ref)
    cases["W8A8 int8 + act. quant"] = (w8a8_dynamic, w8a8_dynamic, w8_ref)
    if m > 16:  # torch._int_mm needs M > 16
        cases["torch._int_mm W8A8 (ref.)"] = (int_mm, int_mm, w8_ref)

    w4codes, w4 = _weights(n, k, 4, rng)
    w4_ref = x_deq @ (w4codes.float() * ws[:, None]).T
    xq4, xs4, _ = dispatch.quantize_per_token(x, 4)
    w4a4_ref = (xq4.float() * xs4[:, None]) @ (w4codes.float() * ws[:, None]).T

    def w4a8() -> torch.Tensor:
        return dispatch.w4a8_gemm(xq, xs, w4, ws, out_dtype=torch.bfloat16)

    def w4a4() -> torch.Tensor:
        return dispatch.w4a4_gemm(xq4, xs4, w4, ws, out_dtype=torch.bfloat16)

    cases["W4A8 (int8 MMA)"] = (w4a8, w4a8, w4_ref)
    cases["W4A4 (int8 MMA)"] = (w4a4, w4a4, w4a4_ref)

    def quant() -> torch.Tensor:
        return dispatch.quantize_per_token(x, 8)[0]

    def had_quant() -> torch.Tensor:
        return dispatch.hadamard_quantize_per_token(x, 8)[0]

    cases["act. quant a8 (memory-bound)"] = (quant, quant, None)
    cases["Hadamard + quant a8 (memory-bound)"] = (had_quant, had_quant, None)
    return cases


def bench_shape(shape_id: str) -> None:
    """Check and time every case of one shape for each M; store ratios in RESULTS."""
    n, k = SHAPES[shape_id]
    for m in m_sweep():
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        t_bf16 = median_ms(lambda x=x, w=w: torch.matmul(x, w.t()))
        t_clone = median_ms(lambda x=x: x.clone())
        RESULTS[(m, shape_id, "bf16 torch.matmul (baseline)")] = 1.0
        for name, (timed, checked, ref) in build_cases(m, n, k).items():
            out = checked()  # also triggers compilation and autotuning
            torch.cuda.synchronize()
            if ref is not None and not rel_fro(out, ref) <= ERROR_BAND:
                FAILURES.append(f"{name} {shape_id} M={m}: rel. error {rel_fro(out, ref):.3g} > {ERROR_BAND}")
            t = median_ms(timed)
            RESULTS[(m, shape_id, name)] = t / t_bf16
            if "memory-bound" in name:
                RESULTS[(m, shape_id, name.replace("memory-bound", "vs x.clone()"))] = t / t_clone
        del x, w
        torch.cuda.empty_cache()


def markdown_table() -> str:
    """All ratios as markdown: one table per M, rows = kernels, columns = shapes."""
    import triton

    shapes = [s for s in SHAPES if any(key[1] == s for key in RESULTS)]
    lines = [
        "# dllm_kernels Triton kernels vs bf16 torch.matmul",
        "",
        f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}, triton {triton.__version__}, "
        f"CUDA {torch.version.cuda}; host {platform.node()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "Median time ratio t_kernel / t_bf16_matmul on the same (M, N, K) from `triton.testing.do_bench` (L2",
        "flushed per run); lower is faster, < 1 beats bf16. Rows marked `vs x.clone()` divide by the time of",
        "`x.clone()` of the [M, K] bf16 activation instead. Generated by",
        "`benchmarks/suites/test_bench_kernels_gpu.py`.",
    ]
    for m in sorted({key[0] for key in RESULTS}):
        rows = list(dict.fromkeys(key[2] for key in RESULTS if key[0] == m))
        lines += [
            "",
            f"## M = {m}",
            "",
            "| kernel | " + " | ".join(shapes) + " |",
            "|---" * (len(shapes) + 1) + "|",
        ]
        for row in rows:
            cells = [RESULTS.get((m, s, row)) for s in shapes]
            lines.append(f"| {row} | " + " | ".join("" if c is None else f"{c:.3f}" for c in cells) + " |")
    if FAILURES:
        lines += ["", "## Correctness failures", "", *[f"- {f}" for f in FAILURES]]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module", autouse=True)
def write_table(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the module: print the ratio table and write it to DLLM_BENCH_OUT."""
    yield
    if not RESULTS:
        return
    text = markdown_table()
    out = Path(os.environ.get("DLLM_BENCH_OUT", REPO / "docs" / "benchmarks" / "kernels.md"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    for line in [*text.splitlines(), f"(written to {out})"]:
        reporter.write_line(line)


@pytest.mark.parametrize("shape_id", list(SHAPES))
def test_bench_shape(shape_id: str) -> None:
    if shape_id not in shape_ids():
        pytest.skip(f"{shape_id} not in DLLM_BENCH_SHAPES")
    bench_shape(shape_id)
    mine = [f for f in FAILURES if f" {shape_id} " in f]
    assert not mine, "\n".join(mine)
