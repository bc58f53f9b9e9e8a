"""``dllmq bench`` end to end with tiny sizes: the table rows, the JSON report and the errors.

Timings are only checked for consistency between the table, the JSON and each other, never for speed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dllm_bench.cli import main
from dllm_bench.machine import cpu_name
from dllm_kernels.cpu import native_bf16
from dllm_sampler import load

TINY = ["--gen-length", "2", "--steps", "2", "--prompt-len", "3", "--warmup", "0", "--repeats", "1"]


def _bench(*argv: str) -> int:
    return main(["bench", *TINY, *argv])


def _table(out: str) -> list[list[str]]:
    """The table's lines (header first) split on runs of two or more spaces."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("model "))
    rows = [line for line in lines[start:] if not line.startswith("wrote")]
    return [[c.strip() for c in line.split("  ") if c.strip()] for line in rows]


def test_tiny_llada_prints_a_row_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = tmp_path / "out" / "bench.json"
    assert _bench("--model", "tiny-llada", "--json", str(report)) == 0
    header, row = _table(capsys.readouterr().out)
    assert header[0] == "model" and len(row) == len(header) == 12
    assert row[0] == "tiny-llada"

    data = json.loads(report.read_text())
    assert data["settings"]["gen_length"] == 2 and data["settings"]["device"] == "cpu"
    assert data["settings"]["dtype"] == "float32"  # the CPU default, though the model is stored in bf16
    info = data["settings"]["machine"]
    assert info["torch"] == torch.__version__ and info["cpus"] == os.cpu_count() and info["cpu"]
    assert info["weight_only_gemm"] == ("bfloat16" if native_bf16() else "float32")
    (entry,) = data["rows"]
    assert entry["model"] == "tiny-llada"
    float32 = load("tiny-llada", dtype=torch.float32)
    assert entry["memory"]["total_bytes"] == sum(p.numel() * 4 for p in float32.model.parameters())
    assert entry["memory"]["bits_per_weight"] == 32.0
    speed = entry["speed"]
    assert speed["steps_per_token"] == 1.0 and speed["gen_length"] == 2 and speed["repeats"] == 1
    assert speed["tokens_per_s"] == pytest.approx(2 / (speed["step_ms"] * 2 / 1000))
    assert (
        entry["vs_first"]["weights"]
        == entry["vs_first"]["tokens_per_s"]
        == entry["vs_first"]["step_ms"]
        == 1.0
    )
    columns = dict(zip(header, row, strict=True))
    assert float(columns["steps/tok"]) == 1.0
    assert float(columns["ms/step"]) == pytest.approx(speed["step_ms"], abs=0.005)


def test_synthetic_rows_follow_the_baseline(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = tmp_path / "bench.json"
    argv = ["--model", "tiny-llada", "--synthetic", "dream-tiny", "--layers", "1", "--steps", "4"]
    assert _bench(*argv, "--json", str(report)) == 0
    rows = _table(capsys.readouterr().out)[1:]
    assert [r[0] for r in rows] == ["tiny-llada", "synthetic dream-tiny (1 layer)"]
    base, synthetic = json.loads(report.read_text())["rows"]
    assert synthetic["speed"]["sampler"] == "dream" and synthetic["speed"]["steps_per_token"] == 2.0
    assert synthetic["speed"]["dtype"] == "float32"  # the synthetic model follows the CPU default too
    ratio = synthetic["memory"]["total_bytes"] / base["memory"]["total_bytes"]
    assert synthetic["vs_first"]["weights"] == pytest.approx(ratio)
    speedup = synthetic["speed"]["tokens_per_s"] / base["speed"]["tokens_per_s"]
    assert synthetic["vs_first"]["tokens_per_s"] == pytest.approx(speedup)


def test_quantized_synthetic_row_stores_fewer_bits(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = tmp_path / "bench.json"
    argv = ["--synthetic", "llada-tiny", "--layers", "1", "--quantize", "W4A16g32", "--dtype", "float32"]
    assert _bench(*argv, "--json", str(report)) == 0
    names = [r[0] for r in _table(capsys.readouterr().out)[1:]]
    assert names == ["synthetic llada-tiny (1 layer)", "synthetic llada-tiny (1 layer) RTN W4A16g32"]
    floating, quantized = json.loads(report.read_text())["rows"]
    assert floating["memory"]["bits_per_weight"] == 32.0
    assert quantized["memory"]["bits_per_weight"] == pytest.approx(4 + 32 / 32)  # codes + fp32 scales
    assert quantized["memory"]["n_weights"] == floating["memory"]["n_weights"]
    assert quantized["memory"]["float_total_bytes"] == floating["memory"]["total_bytes"]
    assert quantized["vs_first"]["weights"] < 1.0


def test_rounds_interleave_the_rows_and_report_per_round_ratios(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--rounds 3``: every row is timed once per round, the models in turn; ms/step is the median of the
    rounds and 'ms/step x1st' the median of the per-round ratios, not the ratio of the medians."""
    from dllm_bench.evaluation import rounds
    from dllm_bench.evaluation.speed import SpeedResult

    # Timings of a drifting machine, (round, row) -> ms/step: per-round ratios 1.0, 1.5, 4.0 (median 1.5);
    # both rows' medians are 2.0 (ratio of the medians 1.0).
    step_ms = [2.0, 2.0, 1.0, 1.5, 4.0, 16.0]
    warmups: list[int] = []

    def fake_speed(dlm, batch, gen, steps, prompt, warmup, repeats, *, seed):  # type: ignore[no-untyped-def]
        ms = step_ms[len(warmups)]
        warmups.append(warmup)
        return SpeedResult(
            batch, prompt, gen, steps, warmup, repeats, ms, ms, ms, batch * gen / (ms * steps / 1000),
            steps / gen, 0, "not_measured", "cpu", "float32", dlm.arch,
        )  # fmt: skip

    monkeypatch.setattr(rounds, "sampler_speed", fake_speed)
    report = tmp_path / "bench.json"
    argv = [
        "--synthetic",
        "llada-tiny",
        "--layers",
        "1",
        "--float-dtypes",
        "float32,bfloat16",
        "--warmup",
        "2",
    ]
    assert _bench(*argv, "--rounds", "3", "--json", str(report)) == 0
    assert warmups == [2, 2, 0, 0, 0, 0]  # 2 rows x 3 rounds, round-major; the warmup in round 1 only
    data = json.loads(report.read_text())
    base, other = data["rows"]
    assert base["speed"]["step_ms"] == other["speed"]["step_ms"] == 2.0
    assert base["vs_first"]["step_ms"] == 1.0 and other["vs_first"]["step_ms"] == pytest.approx(1.5)
    assert other["vs_first"]["tokens_per_s"] == pytest.approx(1 / 1.5)
    assert base["speed"]["repeats"] == 3 and base["speed"]["step_ms_max"] == 4.0
    assert data["settings"]["rounds"] == 3
    header, _, second = _table(capsys.readouterr().out)
    assert dict(zip(header, second, strict=True))["ms/step x1st"] == "1.50"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps must be an integer >= 1"),
        (["--batch", "-2"], "--batch must be"),
        (["--warmup", "-1"], "--warmup must be an integer >= 0"),
        (["--rounds", "0"], "--rounds must be an integer >= 1"),
        (["--synthetic", "gpt-9b"], "unknown --synthetic shapes 'gpt-9b'"),
        (["--layers", "2"], "add --synthetic"),
        (["--synthetic", "llada-tiny", "--layers", "0"], "--layers must be a positive integer"),
        (["--synthetic", "llada-tiny", "--quantize", "W5A16"], "W<weight bits>A<activation bits>"),
        (["--synthetic", "llada-tiny", "--quantize", "W4A16"], "does not divide the input width"),
        (["--model", "no-such-model"], "packaged models"),
        (["--float-dtypes", "float32,int8"], "--float-dtypes: unknown dtype 'int8'"),
        (["--threads", "0"], "--threads must be a positive integer"),
        (["--llama-cli", "/no/such/llama-diffusion-cli"], "build it with benchmarks/llamacpp/build.sh"),
        (["--synthetic", "llada-tiny", "--llama-cli", __file__], "--llama-cli needs a --model"),
        (["--device", "gpu0"], "not a torch device"),
    ],
)
def test_bad_arguments_are_clear_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert _bench(*argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "model " not in captured.out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_missing_cuda_is_a_clear_error(capsys: pytest.CaptureFixture) -> None:
    assert _bench("--device", "cuda") == 2
    assert "no CUDA device is available" in capsys.readouterr().err


def test_float_dtypes_and_quantized_kinds_of_a_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = tmp_path / "bench.json"
    argv = ["--model", "tiny-llada", "--float-dtypes", "float32,bfloat16", "--quantize", "W8A16g32,W4A4g32"]
    assert _bench(*argv, "--threads", "1", "--json", str(report)) == 0
    names = [r[0] for r in _table(capsys.readouterr().out)[1:]]
    assert names == [
        "tiny-llada float32",
        "tiny-llada bfloat16",
        "tiny-llada RTN W8A16g32",
        "tiny-llada RTN W4A4g32",
    ]
    data = json.loads(report.read_text())
    assert data["settings"]["threads"] == 1
    f32, bf16, w8, w4a4 = data["rows"]
    assert bf16["speed"]["dtype"] == "bfloat16" and bf16["vs_first"]["weights"] == pytest.approx(0.5)
    assert w8["memory"]["bits_per_weight"] == pytest.approx(8 + 1)  # codes + fp32 scales per 32
    assert w4a4["memory"]["bits_per_weight"] == pytest.approx(4 + 1)
    assert w8["vs_first"]["step_ms"] == pytest.approx(w8["speed"]["step_ms"] / f32["speed"]["step_ms"])


FAKE_CLI = """#!/bin/sh
echo "diffusion step: 1/2 [====] 50%" >&2
printf 'total time: 10.00ms, time per step: 1.25ms, sampling time per step: 0.10ms\n\n7+5=12\n' >&2
"""


def test_llama_cpp_rows_read_the_cli_timing_and_the_gguf_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A stand-in ``llama-diffusion-cli`` (a script printing what the real one prints) checks the rows
    without a llama.cpp build; the GGUF files are real (dllmq's writer)."""
    pytest.importorskip("gguf", reason="the gguf package writes the files (dev group)")
    cli = tmp_path / "llama-diffusion-cli"
    cli.write_text(FAKE_CLI)
    cli.chmod(0o755)
    report = tmp_path / "bench.json"
    assert _bench("--model", "tiny-llada", "--llama-cli", str(cli), "--json", str(report)) == 0
    names = [r[0] for r in _table(capsys.readouterr().out)[1:]]
    assert names == ["tiny-llada", *(f"tiny-llada llama.cpp {k}" for k in ("f32", "Q8_0", "Q4_0"))]
    _, f32, q8, q4 = json.loads(report.read_text())["rows"]
    assert f32["speed"]["step_ms"] == q8["speed"]["step_ms"] == 1.25
    assert f32["speed"]["sampler"] == "llama-diffusion-cli" and q4["speed"]["dtype"] == "Q4_0"
    assert f32["memory"]["bits_per_weight"] == 32.0
    assert q8["memory"]["bits_per_weight"] == pytest.approx(8.5)  # 32 int8 codes + one fp16 scale
    assert q4["memory"]["bits_per_weight"] == pytest.approx(4.5)


def test_threads_hold_in_a_fresh_process(tmp_path: Path) -> None:
    """``--threads 1`` in a fresh process (where Numba's threading layer starts during the run) is the thread
    count the rows run with and the report states: starting Numba's OpenMP layer after torch's setting
    used to put torch back on every core."""
    report = tmp_path / "bench.json"
    code = (
        "import sys; from dllm_bench.cli import main; "
        f"sys.exit(main(['bench', *{TINY!r}, '--threads', '1', '--json', {str(report)!r}]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(report.read_text())["settings"]["threads"] == 1


def test_the_report_says_which_gemm_the_weight_only_kinds_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cap of oneDNN below AVX512-BF16 (or a CPU without bf16 dot products) sends the weight-only kinds to
    float32 tiles: the printed machine line and the JSON say so, with the cap."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    native_bf16.cache_clear()
    try:
        report = tmp_path / "bench.json"
        assert _bench("--model", "tiny-llada", "--json", str(report)) == 0
    finally:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
        native_bf16.cache_clear()
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("machine: "))
    assert "CPU weight-only GEMMs in float32 (no native bf16, ONEDNN_MAX_CPU_ISA=AVX2)" in line
    info = json.loads(report.read_text())["settings"]["machine"]
    assert info["weight_only_gemm"] == "float32" and info["onednn_max_cpu_isa"] == "AVX2"


def test_cpu_name_reads_proc_cpuinfo_and_falls_back(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Test CPU 9000\nflags\t: fpu\n")
    assert cpu_name(cpuinfo) == "Test CPU 9000"
    assert cpu_name(tmp_path / "missing") == (platform.processor() or "unknown CPU")
