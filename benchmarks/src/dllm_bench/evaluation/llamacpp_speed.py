"""llama.cpp's speed on the same model, for `dllmq bench --llama-cli`: GGUF files run by llama-diffusion-cli.

`gguf_files` writes the float model as llama.cpp's own f32 file and its Q8_0 and Q4_0 files with dllmq's
GGUF writer (RTN on those grids is llama.cpp's reference quantization, byte for byte: docs/gguf.md), so no
``llama-quantize`` is needed. `llamacpp_speed` runs each file with the same sequence length (the CLI
denoises ``n_ubatch`` tokens per step: prompt plus masked tokens), steps and threads as the dllmq rows,
on the timestep schedule with greedy confidence decoding, and reads the CLI's own "time per step".
`gguf_memory` reads the stored sizes back from the file (block linears: ``blk.*`` 2-D tensors).
"""

from __future__ import annotations

import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path

import torch
from dllm_sampler import DiffusionLM

from dllm_bench.evaluation.memory import WeightMemory
from dllm_bench.evaluation.speed import SpeedResult
from dllm_bench.llamacpp.command import DREAM_EPS, SAMPLERS
from dllm_bench.llamacpp.output import parse_diffusion_output

__all__ = ["LLAMA_TYPES", "gguf_files", "gguf_memory", "llamacpp_command", "llamacpp_speed"]

LLAMA_TYPES = ("f32", "Q8_0", "Q4_0")
"""The llama.cpp rows: the float file and the two block-32 types."""
_PROMPT = "12+34="
"""A short prompt (the masked rest of the sequence is what each step computes)."""


def gguf_files(dlm_loader: Callable[[], DiffusionLM], folder: Path) -> dict[str, Path]:
    """``LLAMA_TYPES`` -> GGUF file written under ``folder``; ``dlm_loader()`` returns a fresh float32
    ``DiffusionLM`` of the model (each quantized type rounds its own copy)."""
    from dllm_weightquant.gguf import quantize_for_gguf, write_gguf

    files = {}
    for kind in LLAMA_TYPES:
        dlm = dlm_loader()
        if kind != "f32":
            quantize_for_gguf(dlm, kind)
        files[kind] = write_gguf(
            dlm, folder / f"model-{kind}.gguf", gguf_type=None if kind == "f32" else kind, float_type="f32"
        )
    return files


def gguf_memory(path: Path) -> WeightMemory:
    """Stored bytes of a GGUF file, split like `weight_memory` (float equivalent: float32 weights)."""
    from dllm_weightquant.gguf._lib import import_gguf

    reader = import_gguf().GGUFReader(str(path))
    n_weights = linear = other = 0
    for tensor in reader.tensors:
        size = int(tensor.n_bytes)
        if tensor.name.startswith("blk.") and len(tensor.shape) == 2 and "norm" not in tensor.name:
            n_weights += int(tensor.n_elements)
            linear += size
        else:
            other += size
    return WeightMemory(n_weights, linear, 0, 0, other, linear + other, torch.float32)


def llamacpp_command(binary: Path, gguf: Path, seq_len: int, steps: int, threads: int) -> list[str]:
    """argv of one timed ``llama-diffusion-cli`` run: ``seq_len`` tokens per step, ``steps`` steps."""
    return [
        str(binary), "-m", str(gguf), "-p", _PROMPT,
        "-t", str(threads), "-tb", str(threads),
        "-c", str(seq_len), "-b", str(seq_len), "-ub", str(seq_len),
        "--diffusion-steps", str(steps), "--diffusion-eps", str(DREAM_EPS),
        *SAMPLERS["greedy-ltr"].flags(), "--no-log-prefix", "--log-colors", "off",
    ]  # fmt: skip


def llamacpp_speed(
    binary: Path, gguf: Path, gen_length: int, steps: int, prompt_len: int,
    warmup: int, repeats: int, threads: int, kind: str,
) -> SpeedResult:  # fmt: skip
    """Median "time per step" of ``repeats`` CLI runs (after ``warmup``) on a sequence of ``prompt_len +
    gen_length`` tokens; tokens/s counts ``gen_length`` tokens per ``steps`` steps like the dllmq rows.

    Raises:
        RuntimeError: the CLI failed (its last output line is quoted).
    """
    argv = llamacpp_command(binary, gguf, prompt_len + gen_length, steps, threads)
    times = []
    for i in range(warmup + repeats):
        done = subprocess.run(argv, capture_output=True, check=False)
        log = (done.stdout + done.stderr).decode("utf-8", errors="replace").replace("\r", "\n")
        try:
            step_ms = parse_diffusion_output(log).ms_per_step
        except ValueError as exc:
            raise RuntimeError(f"{binary.name} on {gguf.name} (exit {done.returncode}): {exc}") from None
        if i >= warmup:
            times.append(step_ms)
    median = statistics.median(times)
    return SpeedResult(
        batch_size=1, prompt_len=prompt_len, gen_length=gen_length, steps=steps, warmup=warmup,
        repeats=repeats, step_ms=median, step_ms_min=min(times), step_ms_max=max(times),
        tokens_per_s=gen_length / (steps * median / 1000.0), steps_per_token=steps / gen_length,
        peak_memory_bytes=0, peak_memory_source="not_measured", device="cpu", dtype=kind,
        sampler="llama-diffusion-cli",
    )  # fmt: skip
