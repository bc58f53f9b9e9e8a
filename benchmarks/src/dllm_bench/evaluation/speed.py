"""Sampler speed of a diffusion LM: ms per denoising step, tokens per second, steps per token, peak memory.

`sampler_speed` runs the real sampler (``dllm_sampler.generate`` with the arch's answer config:
LLaDA with one block, Dream's entropy sampler, greedy) on random prompt ids, ``warmup`` untimed calls
and then ``repeats`` timed ones. Every call runs exactly ``steps`` model forwards, so ms per step is a
call's wall time divided by ``steps``; CUDA is synchronised before and after each timed call.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the timed calls (weights included, since
they are allocated); on the CPU the increase of the process's peak resident set over the timed calls
above its resident set before them (the sampler's working memory; weights excluded, they are already
resident), read from ``/proc/self/status`` after resetting the peak, else from ``resource.getrusage``.
"""

from __future__ import annotations

import dataclasses
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dllm_sampler
import torch
from dllm_sampler import DiffusionLM, GenerationConfig
from dllm_sampler.tasks import answer_generation_config
from torch import Tensor

__all__ = ["PEAK_SOURCES", "SpeedResult", "random_prompt", "sampler_speed", "speed_config"]

PEAK_SOURCES = {
    "cuda_max_allocated": "torch.cuda.max_memory_allocated while sampling (weights included)",
    "rss_peak_increase": "peak RSS increase while sampling (weights excluded)",
    "ru_maxrss_increase": "increase of the process's lifetime peak RSS while sampling (weights excluded)",
    "not_measured": "not measured (llama.cpp rows run in their own process)",
}
"""How ``SpeedResult.peak_memory_bytes`` was measured -> what it means (see the module docstring)."""

_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class SpeedResult:
    """Timings of `sampler_speed`.

    Attributes:
        batch_size, prompt_len, gen_length, steps, warmup, repeats: the settings (tokens, steps, calls).
        step_ms: median over the timed calls of (call wall time / steps), milliseconds.
        step_ms_min, step_ms_max: the fastest and slowest call's ms per step.
        tokens_per_s: generated tokens (``batch_size * gen_length``) per second of the median call.
        steps_per_token: denoising steps per generated token of a sequence (``steps / gen_length``).
        peak_memory_bytes: peak memory (bytes) measured as ``peak_memory_source`` says.
        peak_memory_source: a key of `PEAK_SOURCES`.
        device: where the model ran (``"cpu"``, ``"cuda:0"``...).
        dtype: the model's floating dtype name (``"bfloat16"``...).
        sampler: the sampler config's ``SAMPLER_NAME`` (``"llada"`` or ``"dream"``).
    """

    batch_size: int
    prompt_len: int
    gen_length: int
    steps: int
    warmup: int
    repeats: int
    step_ms: float
    step_ms_min: float
    step_ms_max: float
    tokens_per_s: float
    steps_per_token: float
    peak_memory_bytes: int
    peak_memory_source: str
    device: str
    dtype: str
    sampler: str

    def to_dict(self) -> dict[str, Any]:
        """The fields, JSON-ready."""
        return dataclasses.asdict(self)


def speed_config(arch: str, gen_length: int, steps: int) -> GenerationConfig:
    """The arch's answer sampler config (one block, greedy) with ``gen_length`` tokens in ``steps`` steps."""
    config = answer_generation_config(arch, gen_length)
    return dataclasses.replace(config, steps=steps)


def random_prompt(dlm: DiffusionLM, batch_size: int, prompt_len: int, seed: int = 0) -> Tensor:
    """Random prompt ids ``[batch_size, prompt_len]`` (long, on ``dlm.device``), uniform over the vocabulary
    without the mask token."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, dlm.vocab_size - 1, (batch_size, prompt_len), generator=generator)
    ids[ids >= dlm.mask_token_id] += 1
    return ids.to(dlm.device)


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        least = 0 if name == "warmup" else 1
        if not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_kib(field: str) -> int:
    """A ``Vm*`` field of /proc/self/status in KiB."""
    match = re.search(rf"^{field}:\s+(\d+) kB", _PROC_STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"{_PROC_STATUS} has no {field}")
    return int(match.group(1))


def _ru_maxrss_bytes() -> int:
    """The process's lifetime peak resident set in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _start_peak(device: torch.device) -> Callable[[], tuple[int, str]]:
    """Start a peak-memory measurement on ``device``; the returned function ends it -> (bytes, source)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return lambda: (int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated")
    try:
        before = _proc_kib("VmRSS")
        _PROC_CLEAR_REFS.write_text("5")  # resets VmHWM, the peak resident set, to the current one
        return lambda: (max(0, _proc_kib("VmHWM") - before) * 1024, "rss_peak_increase")
    except OSError:
        start = _ru_maxrss_bytes()
        return lambda: (max(0, _ru_maxrss_bytes() - start), "ru_maxrss_increase")


def _timed_call(run: Callable[[], Tensor], device: torch.device) -> float:
    """Wall seconds of ``run()``, CUDA synchronised on both sides."""
    _sync(device)
    start = time.perf_counter()
    run()
    _sync(device)
    return time.perf_counter() - start


def sampler_speed(
    dlm: DiffusionLM,
    batch_size: int = 1,
    gen_length: int = 64,
    steps: int = 64,
    prompt_len: int = 16,
    warmup: int = 1,
    repeats: int = 3,
    *,
    seed: int = 0,
) -> SpeedResult:
    """Time the real sampler on ``dlm`` (see the module docstring).

    Args:
        dlm: the model, on the device to time (any ``DiffusionLM``: float or quantized).
        batch_size: sequences per call.
        gen_length: generated tokens per sequence.
        steps: denoising steps per call (one model forward each).
        prompt_len: random prompt tokens per sequence.
        warmup: untimed calls first (kernel compilation, autotuning, allocator warm-up); >= 0.
        repeats: timed calls; >= 1.
        seed: seed of the random prompt ids.

    Raises:
        ValueError: a non-positive size (or a negative ``warmup``).
    """
    _check_sizes(
        batch_size=batch_size,
        gen_length=gen_length,
        steps=steps,
        prompt_len=prompt_len,
        warmup=warmup,
        repeats=repeats,
    )
    config = speed_config(dlm.arch, gen_length, steps)
    prompt = random_prompt(dlm, batch_size, prompt_len, seed)
    device = prompt.device
    dlm.model.eval()

    def run() -> Tensor:
        return dllm_sampler.generate(dlm, prompt, config=config)

    for _ in range(warmup):
        _timed_call(run, device)
    stop_peak = _start_peak(device)
    seconds = [_timed_call(run, device) for _ in range(repeats)]
    peak, source = stop_peak()
    median = statistics.median(seconds)
    return SpeedResult(
        batch_size=batch_size,
        prompt_len=prompt_len,
        gen_length=gen_length,
        steps=steps,
        warmup=warmup,
        repeats=repeats,
        step_ms=1000.0 * median / steps,
        step_ms_min=1000.0 * min(seconds) / steps,
        step_ms_max=1000.0 * max(seconds) / steps,
        tokens_per_s=batch_size * gen_length / median,
        steps_per_token=steps / gen_length,
        peak_memory_bytes=peak,
        peak_memory_source=source,
        device=str(device),
        dtype=str(dlm.dtype).removeprefix("torch."),
        sampler=config.SAMPLER_NAME,
    )
