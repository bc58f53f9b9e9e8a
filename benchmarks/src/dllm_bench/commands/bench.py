"""``dllmq bench``: weight memory and sampler speed of diffusion LMs, side by side.

    dllmq bench --model A [--model B ...] [--device cpu|cuda] [--batch 1] [--gen-length 64] [--steps 64]
                [--float-dtypes float32,bfloat16] [--quantize all|W4A16,W8A8,...] [--threads N]
                [--llama-cli PATH] [--synthetic llada-8b|dream-7b [--layers N]] [--rounds R] [--json FILE]

One table row per model: stored weight memory (MiB, bits per block-linear weight, ratio to the float
equivalent), ms per denoising step, generated tokens/s, steps per token, peak memory, and the ratios of
weights, ms per step, tokens/s and peak memory to the first row (the baseline, typically the float model).

Models run in ``--dtype`` (default float32 on CPU, bfloat16 on CUDA); ``--float-dtypes`` measures each model
in several float dtypes instead (the first is the baseline). ``--synthetic`` adds a random-weight model
with the published shapes (`dllm_bench.synthetic`), built on ``--device`` in that dtype, so a GPU can time
per-step latency at 8B shapes; ``--layers`` keeps fewer blocks. ``--quantize`` also quantizes every model
with RTN at each setting through the pipeline, exports it to a temporary folder and loads it back
(``load_any``: packed weights on the ``dllm_kernels`` low-bit GEMMs, as a user runs a checkpoint) as more
rows; ``all`` is every kind dllmq exports with a real kernel (`QUANTIZE_ALL`). ``--llama-cli`` adds, for
each ``--model``, llama.cpp's f32 / Q8_0 / Q4_0 files of it run by that ``llama-diffusion-cli`` on the same
sequence length, steps and threads (`dllm_bench.evaluation.llamacpp_speed`). ``--threads`` sets the CPU
threads of torch, Numba and llama.cpp (default: all cores). ``--rounds R`` keeps every dllmq row's model
loaded and times them in turn, R rounds (`dllm_bench.evaluation.rounds`): the ratios to the first row are
the medians of the per-round ratios, which a machine whose speed drifts between rows leaves intact.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dllm_bench.commands._checks import (
    DTYPES,
    add_device_and_dtype,
    check_model,
    check_out_file,
    check_positive,
)

HELP = (
    "Measure weight memory and sampler speed (ms/step, tokens/s, steps/token, peak memory) of models side "
    "by side; --synthetic adds a random-weight model with LLaDA-8B or Dream-7B shapes."
)

DEFAULT_MODEL = "tiny-llada"
QUANTIZE_ALL = ("W8A16", "W4A16", "W3A16", "W8A8", "W8A8ch", "W8A8KV16ch", "W4A4")
"""``--quantize all``: the weight-only kinds (bf16 tile GEMMs on CPU) and the integer-GEMM kinds, W8A8 with
group-wise and with per-channel weights (SmoothQuant's, one integer GEMM per layer), with and without the
attention's Q/K/V quantized."""
SYNTHETIC_NAMES = ("llada-8b", "dream-7b", "llada-tiny", "dream-tiny")
"""``--synthetic`` names: each published shape and each architecture's tiny shape (the work module maps
them to `dllm_bench.synthetic` arguments)."""
_SIZES = {"batch": 1, "gen_length": 1, "steps": 1, "prompt_len": 1, "warmup": 0, "repeats": 1, "rounds": 1}
"""Size flags and their least allowed value."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        dest="models",
        metavar="MODEL",
        action="append",
        help="shipped model name, checkpoint folder or quantized folder; repeat for more rows, the first is "
        f"the baseline (default {DEFAULT_MODEL} when no --synthetic is given)",
    )
    add_device_and_dtype(parser)
    parser.add_argument("--batch", type=int, default=1, help="sequences per sampler call (default 1)")
    parser.add_argument("--gen-length", type=int, default=64, help="generated tokens (default 64)")
    parser.add_argument("--steps", type=int, default=64, help="denoising steps per call (default 64)")
    parser.add_argument("--prompt-len", type=int, default=16, help="random prompt tokens (default 16)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls, median reported (default 3)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="time the dllmq rows in this many interleaved rounds, every model loaded at once: ms/step is "
        "the median over the rounds and 'ms/step x1st' the median of the per-round ratios, robust to a "
        "machine whose speed drifts (default 1: one row after the other)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of prompts and synthetic weights")
    parser.add_argument(
        "--synthetic",
        metavar="SHAPES",
        help=f"add a random-weight model with these shapes: {', '.join(SYNTHETIC_NAMES)}",
    )
    parser.add_argument("--layers", type=int, help="blocks of the synthetic model (default: all)")
    parser.add_argument(
        "--quantize",
        metavar="SCHEMES",
        help="also quantize every model with RTN at these settings, comma-separated (W4A16, W8A8, W4A4, "
        f"W4A16g64...) or 'all' ({','.join(QUANTIZE_ALL)})",
    )
    parser.add_argument(
        "--float-dtypes",
        metavar="DTYPES",
        help="measure the float models in each of these dtypes, comma-separated (e.g. float32,bfloat16; "
        "default: --dtype); quantized rows load in the first",
    )
    parser.add_argument(
        "--threads", type=int, help="CPU threads of torch, Numba and llama.cpp (default: all)"
    )
    parser.add_argument(
        "--llama-cli",
        type=Path,
        metavar="PATH",
        help="a built llama-diffusion-cli: adds llama.cpp's f32 / Q8_0 / Q4_0 rows for each --model",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows to this JSON file")


def check(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` naming the flag for bad sizes and flags that need ``--synthetic``, and for
    models and output paths that do not exist or cannot be written."""
    check_positive(args, _SIZES)
    if args.synthetic is not None and args.synthetic not in SYNTHETIC_NAMES:
        raise ValueError(
            f"unknown --synthetic shapes {args.synthetic!r}; choose one of {', '.join(SYNTHETIC_NAMES)}"
        )
    if args.synthetic is None and args.layers is not None:
        raise ValueError("--layers applies to the synthetic model; add --synthetic llada-8b|dream-7b")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    for dtype in float_dtypes(args):
        if dtype not in DTYPES:
            raise ValueError(f"--float-dtypes: unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if args.llama_cli is not None:
        if not args.llama_cli.is_file():
            raise ValueError(
                f"--llama-cli {args.llama_cli} is not a file; build it with benchmarks/llamacpp/build.sh"
            )
        if not args.models:
            raise ValueError("--llama-cli needs a --model (synthetic models have no tokenizer for llama.cpp)")
    if args.layers is not None and args.layers < 1:
        raise ValueError(f"--layers must be a positive integer, got {args.layers}")
    for name in args.models or []:
        check_model(name)
    if args.json is not None:
        check_out_file(args.json, "--json")


def float_dtypes(args: argparse.Namespace) -> list[str]:
    """The ``--float-dtypes`` names (empty when not given: the models run in ``--dtype``)."""
    return [d.strip() for d in (args.float_dtypes or "").split(",") if d.strip()]


def quantize_kinds(args: argparse.Namespace) -> list[str]:
    """The ``--quantize`` settings (``all`` expanded; empty when not given)."""
    if args.quantize is None:
        return []
    if args.quantize.strip().lower() == "all":
        return list(QUANTIZE_ALL)
    return [k.strip() for k in args.quantize.split(",") if k.strip()]


def run(args: argparse.Namespace) -> int:
    from dllm_bench.commands.work import bench

    return bench.run(args)
