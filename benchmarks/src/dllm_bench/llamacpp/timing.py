"""Time per denoising step of several GGUF files, measured interleaved so that they share the machine's
load: ``python -m dllm_bench.llamacpp.timing --model tiny-llada --problems 5 LABEL=FILE ...``.

Each round runs every file once on the same problem (one ``llama-diffusion-cli`` process, 1 thread); the
result per file is the median of the CLI's own "time per step" over ``problems`` rounds. The accuracy runs
record ms/step too, but rows run at different times under different load; use these for comparisons.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from dllm_sampler import load
from dllm_sampler.tasks.arithmetic import heldout_problems
from dllm_sampler.tasks.evaluate import GEN_LENGTH

from dllm_bench.llamacpp.command import SAMPLERS, diffusion_command
from dllm_bench.llamacpp.prepare import LlamaCpp
from dllm_bench.llamacpp.run import prompt_token_count, run_cli

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m dllm_bench.llamacpp.timing", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", default="tiny-llada")
    p.add_argument("--problems", type=int, default=5)
    p.add_argument("--llama-cpp", type=Path, default=Path.home() / ".cache/dllmq/llama.cpp")
    p.add_argument("files", nargs="+", metavar="LABEL=FILE")
    args = p.parse_args(argv)
    binary = LlamaCpp(args.llama_cpp.expanduser()).binary("llama-diffusion-cli")
    dlm = load(args.model, dtype="float32")
    files = dict(item.split("=", 1) for item in args.files)
    times: dict[str, list[float]] = {label: [] for label in files}
    for problem in heldout_problems(args.problems):
        n = prompt_token_count(dlm.tokenizer, problem)
        for label, file in files.items():
            argv_ = diffusion_command(
                binary, Path(file), problem.text, n, GEN_LENGTH, dlm.arch, SAMPLERS["confidence"]
            )
            times[label].append(run_cli(argv_, label).ms_per_step)
    for label, values in times.items():
        print(f"{label}: median {statistics.median(values):.2f} ms/step over {len(values)} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
