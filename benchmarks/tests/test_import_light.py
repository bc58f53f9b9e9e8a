"""``dllmq generate`` and ``dllmq eval`` on the CPU import only what they use: no Triton, matplotlib or
lm-eval (measured in a fresh interpreter, as a user runs the command)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("triton", "matplotlib", "lm_eval")

SCRIPT = f"""
import sys
from dllm_bench.cli import main
assert main(["generate", "--prompt", "12+34=", "--gen-length", "4", "--steps", "4",
             "--block-length", "4"]) == 0
assert main(["eval", "--problems", "1", "--code-chunks", "1", "--mc-num", "1", "--ratios", "0.5",
             "--no-progress"]) == 0
print("HEAVY", sorted(m for m in {HEAVY!r} if m in sys.modules))
"""


def test_generate_and_eval_leave_triton_matplotlib_and_lm_eval_unimported() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY []" in done.stdout, done.stdout[-500:]
