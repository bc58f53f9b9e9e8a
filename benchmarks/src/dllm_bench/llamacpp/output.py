"""Parse what ``llama-diffusion-cli`` prints: the generated text and its time per denoising step.

The CLI logs (to stdout or stderr, depending on llama.cpp's log settings) one timing line after the last
step, then a blank line and the generated tokens (prompt removed, special tokens not rendered)::

    total time: 1320.51ms, time per step: 37.73ms, sampling time per step: 0.61ms

    8190+8040:1010=6231-3550:0110=3770
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DiffusionOutput", "parse_diffusion_output"]

_TIMING_RE = re.compile(
    r"total time: (?P<total>[0-9.]+)ms, time per step: (?P<step>[0-9.]+)ms, "
    r"sampling time per step: (?P<sampling>[0-9.]+)ms\n"
)


@dataclass(frozen=True)
class DiffusionOutput:
    """One run of the CLI.

    Attributes:
        text: the generated text (the CLI prints it between a blank line and a final newline).
        ms_per_step: wall time per denoising step, milliseconds (model forward plus sampling).
        sampling_ms_per_step: the sampling part of it, milliseconds.
    """

    text: str
    ms_per_step: float
    sampling_ms_per_step: float


def parse_diffusion_output(log: str) -> DiffusionOutput:
    """The generated text and timings of one ``llama-diffusion-cli`` run, from its combined stdout and
    stderr (``log``).

    Raises:
        ValueError: when the log has no timing line (the CLI failed before generating); the message quotes
            the log's last line.
    """
    matches = list(_TIMING_RE.finditer(log))
    if not matches:
        last = log.strip().splitlines()[-1] if log.strip() else "(empty output)"
        raise ValueError(f"llama-diffusion-cli printed no timing line; its last line was: {last}")
    match = matches[-1]
    rest = log[match.end() :]
    text = rest[1:] if rest.startswith("\n") else rest
    text = text.split("\n", 1)[0]
    return DiffusionOutput(
        text=text, ms_per_step=float(match.group("step")), sampling_ms_per_step=float(match.group("sampling"))
    )
