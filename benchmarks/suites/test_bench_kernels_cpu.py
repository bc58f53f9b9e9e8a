"""CPU benchmark: each dllm_kernels Numba reference against a plain-torch implementation of the same op.

Run with ``uv run pytest benchmarks/suites/test_bench_kernels_cpu.py --benchmark-enable`` (the root config
disables benchmarks and does not collect this folder by default). Throughput is reported as GB/s for
memory-bound ops (bytes read + written) and GFLOP/s (2*M*N*K) for GEMMs; a table of numba/torch throughput
ratios is printed at the end of the module. Shapes are kept small enough for a 2-core CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from dllm_kernels import QuantSpec
from dllm_kernels import reference as ref

M, N, K, GROUP = 64, 1024, 1024, 128
ROWS, COLS = 1024, 4096
RESULTS: dict[str, dict[str, float]] = {}
UNITS: dict[str, str] = {}


# ------------------------------------------------------------------------------------------------------
# plain-torch implementations (the baselines)
# ------------------------------------------------------------------------------------------------------


def torch_quantize_group_sym(x: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric group quantization with the same scale convention as dllm_kernels."""
    half = 1 << (bits - 1)
    g = x.unflatten(-1, (x.shape[1] // group, group))
    scale = g.abs().amax(-1, keepdim=True) / ((2 * half - 1) / 2)
    scale = torch.where(scale == 0, torch.finfo(torch.float32).eps, scale)
    codes = torch.round(g / scale).clamp(-half, half - 1).to(torch.int8).flatten(-2)
    return codes, scale.squeeze(-1)


def torch_quantize_per_token(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    half = 1 << (bits - 1)
    scale = x.abs().amax(-1, keepdim=True) / ((2 * half - 1) / 2)
    scale = torch.where(scale == 0, torch.finfo(torch.float32).eps, scale)
    return torch.round(x / scale).clamp(-half, half - 1).to(torch.int8), scale.squeeze(-1)


def torch_pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Dense little-endian int32 packing along the last dim (offset-binary symmetric codes)."""
    rows, cols = codes.shape
    words = math.ceil(cols * bits / 32)
    v = codes.to(torch.int64) + (1 << (bits - 1))
    bit = torch.arange(cols) * bits
    word, off = bit // 32, bit % 32
    out = torch.zeros(rows, words + 1, dtype=torch.int64)
    out.scatter_add_(1, word.expand(rows, -1), (v << off) & 0xFFFFFFFF)
    out.scatter_add_(1, (word + 1).expand(rows, -1), v >> (32 - off))
    out = out[:, :words] & 0xFFFFFFFF
    return torch.where(out >= 1 << 31, out - (1 << 32), out).to(torch.int32)


def torch_unpack(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    bit = torch.arange(cols) * bits
    word, off = bit // 32, bit % 32
    w = packed.to(torch.int64) & 0xFFFFFFFF
    w = torch.cat([w, torch.zeros(w.shape[0], 1, dtype=torch.int64)], 1)
    lo = w[:, word] >> off
    hi = w[:, word + 1] << (32 - off)
    return (((lo | hi) & ((1 << bits) - 1)) - (1 << (bits - 1))).to(torch.int8)


def torch_wna16(
    x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, bits: int, group: int
) -> torch.Tensor:
    w = torch_unpack(packed, bits, x.shape[1]).float() * scale.repeat_interleave(group, 1)
    return x @ w.T


def torch_int8_gemm(xq: torch.Tensor, xs: torch.Tensor, wq: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    acc = torch._int_mm(xq, wq.T.contiguous())
    return acc.float() * xs[:, None] * ws[None, :]


def torch_w4a8(xq: torch.Tensor, xs: torch.Tensor, packed: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    return torch_int8_gemm(xq, xs, torch_unpack(packed, 4, xq.shape[1]), ws)


# ------------------------------------------------------------------------------------------------------
# harness
# ------------------------------------------------------------------------------------------------------


def run(benchmark, op: str, impl: str, fn: Callable[[], object], work: float, unit: str) -> None:
    """Time ``fn`` (1 warm-up incl. numba compile/cache load, then 5 rounds) and record throughput."""
    benchmark.group = op
    benchmark.extra_info["unit"] = unit
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None with --benchmark-disable
        median = benchmark.stats.stats.median
        RESULTS.setdefault(op, {})[impl] = work / median / 1e9
        UNITS[op] = unit


@pytest.fixture(scope="module", autouse=True)
def ratio_table(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the module: print numba vs torch throughput and their ratio for every op."""
    yield
    if not RESULTS:
        return
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    lines = [
        "",
        "dllm_kernels CPU: Numba reference vs plain torch (median; ratio > 1 means Numba is faster)",
        f"{'op':<34}{'unit':>9}{'numba':>12}{'torch':>12}{'numba/torch':>14}",
    ]
    for op, res in RESULTS.items():
        nb, tc = res.get("numba", float("nan")), res.get("torch", float("nan"))
        lines.append(f"{op:<34}{UNITS[op]:>9}{nb:>12.3f}{tc:>12.3f}{nb / tc:>14.3f}")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # module teardown output is captured otherwise
        for line in lines:
            reporter.write_line(line)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x_act = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    codes4, scale4, _ = ref.quantize(w, QuantSpec(4, True, "group", GROUP))
    codes3 = ref.quantize(x_act, QuantSpec(3, True, "group", GROUP))[0]
    xq, xs, _ = ref.quantize_per_token(x, 8)
    wq, ws, _ = ref.quantize_per_token(w, 8)
    w4, ws4, _ = ref.quantize_per_token(w, 4)
    return {
        "x_act": x_act, "x": x, "codes4": codes4, "scale4": scale4, "packed4": ref.pack(codes4, 4),
        "codes3": codes3, "packed3": ref.pack(codes3, 3), "xq": xq, "xs": xs, "wq": wq, "ws": ws,
        "w4p": ref.pack(w4, 4), "ws4": ws4,
    }  # fmt: skip


IMPLS = ["numba", "torch"]


@pytest.mark.parametrize("impl", IMPLS)
def test_quantize_group4(benchmark, data, impl: str) -> None:
    x = data["x_act"]
    spec = QuantSpec(4, True, "group", GROUP)
    xt = torch.from_numpy(x)
    fn = (
        (lambda: ref.quantize(x, spec))
        if impl == "numba"
        else (lambda: torch_quantize_group_sym(xt, 4, GROUP))
    )
    run(benchmark, "quantize g128 w4 sym", impl, fn, x.nbytes + x.size + x.size // GROUP * 4, "GB/s")


@pytest.mark.parametrize("impl", IMPLS)
def test_quantize_per_token8(benchmark, data, impl: str) -> None:
    x = data["x_act"]
    xt = torch.from_numpy(x)
    fn = (
        (lambda: ref.quantize_per_token(x, 8))
        if impl == "numba"
        else (lambda: torch_quantize_per_token(xt, 8))
    )
    run(benchmark, "quantize_per_token a8", impl, fn, x.nbytes + x.size + x.shape[0] * 4, "GB/s")


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("impl", IMPLS)
def test_pack(benchmark, data, impl: str, bits: int) -> None:
    codes = data["codes3"] if bits == 3 else data["codes4"]
    ct = torch.from_numpy(codes)
    fn = (lambda: ref.pack(codes, bits)) if impl == "numba" else (lambda: torch_pack(ct, bits))
    run(benchmark, f"pack {bits}-bit", impl, fn, codes.size + codes.size * bits / 8, "GB/s")


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("impl", IMPLS)
def test_unpack(benchmark, data, impl: str, bits: int) -> None:
    codes, packed = (data["codes3"], data["packed3"]) if bits == 3 else (data["codes4"], data["packed4"])
    pt, cols = torch.from_numpy(packed), codes.shape[1]
    fn = (
        (lambda: ref.unpack(packed, bits, cols))
        if impl == "numba"
        else (lambda: torch_unpack(pt, bits, cols))
    )
    run(benchmark, f"unpack {bits}-bit", impl, fn, packed.nbytes + codes.size, "GB/s")


@pytest.mark.parametrize("impl", IMPLS)
def test_wna16_gemm(benchmark, data, impl: str) -> None:
    x, packed, scale = data["x"], data["packed4"], data["scale4"]
    xt, pt, st = torch.from_numpy(x), torch.from_numpy(packed), torch.from_numpy(scale)
    if impl == "numba":
        fn = lambda: ref.wna16_gemm(x, packed, scale, None, 4, GROUP)  # noqa: E731
    else:
        fn = lambda: torch_wna16(xt, pt, st, 4, GROUP)  # noqa: E731
    run(benchmark, f"wna16_gemm w4 g128 {M}x{N}x{K}", impl, fn, 2 * M * N * K, "GFLOP/s")


@pytest.mark.parametrize("impl", IMPLS)
def test_int8_gemm(benchmark, data, impl: str) -> None:
    args = (data["xq"], data["xs"], data["wq"], data["ws"])
    targs = tuple(torch.from_numpy(a) for a in args)
    fn = (lambda: ref.int8_gemm(*args)) if impl == "numba" else (lambda: torch_int8_gemm(*targs))
    run(benchmark, f"int8_gemm {M}x{N}x{K}", impl, fn, 2 * M * N * K, "GFLOP/s")


@pytest.mark.parametrize("impl", IMPLS)
def test_w4a8_gemm(benchmark, data, impl: str) -> None:
    args = (data["xq"], data["xs"], data["w4p"], data["ws4"])
    targs = tuple(torch.from_numpy(a) for a in args)
    fn = (lambda: ref.w4a8_gemm(*args)) if impl == "numba" else (lambda: torch_w4a8(*targs))
    run(benchmark, f"w4a8_gemm {M}x{N}x{K}", impl, fn, 2 * M * N * K, "GFLOP/s")


@pytest.mark.parametrize("n", [4096, 3584])
@pytest.mark.parametrize("impl", IMPLS)
def test_hadamard_transform(benchmark, impl: str, n: int) -> None:
    x = np.random.default_rng(1).standard_normal((256, n)).astype(np.float32)
    xt = torch.from_numpy(x)
    h = torch.from_numpy(ref.hadamard_matrix(n).astype(np.float32))
    fn = (lambda: ref.hadamard_transform(x)) if impl == "numba" else (lambda: xt @ h)
    run(benchmark, f"hadamard_transform {n}", impl, fn, 2 * x.nbytes, "GB/s")


def test_baselines_compute_the_same_thing(data) -> None:
    """The torch baselines must agree with the references, or the ratios would compare different work."""
    assert torch.equal(torch_pack(torch.from_numpy(data["codes3"]), 3), torch.from_numpy(data["packed3"]))
    assert torch.equal(
        torch_unpack(torch.from_numpy(data["packed4"]), 4, K), torch.from_numpy(data["codes4"])
    )
    codes, _ = torch_quantize_group_sym(torch.from_numpy(data["x_act"]), 4, GROUP)
    assert torch.equal(
        codes, torch.from_numpy(ref.quantize(data["x_act"], QuantSpec(4, True, "group", GROUP))[0])
    )
    args = (data["xq"], data["xs"], data["wq"], data["ws"])
    expected = torch.from_numpy(ref.int8_gemm(*args))
    assert torch.equal(torch_int8_gemm(*(torch.from_numpy(a) for a in args)), expected)
    y = torch_wna16(*(torch.from_numpy(data[k]) for k in ("x", "packed4", "scale4")), 4, GROUP)
    y_ref = torch.from_numpy(ref.wna16_gemm(data["x"], data["packed4"], data["scale4"], None, 4, GROUP))
    assert float(torch.linalg.norm(y - y_ref) / torch.linalg.norm(y_ref)) < 1e-5  # float32 vs float64 sums
