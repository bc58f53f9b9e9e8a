"""``dllmq export --format gguf``: write a float model or a dllmq checkpoint as a GGUF file for llama.cpp.

Every block linear is rounded to ``--gguf-type`` with llama.cpp's own scale rule (RTN; a dllmq checkpoint's
dequantized weights are rounded again, so its grid is not kept: quantize with ``dllmq quantize --format
gguf`` to export GPTQ/CGQ/AWQ weights exactly as they were optimized). See docs/gguf.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dllm_bench.commands._checks import check_model

HELP = "Write a float model or dllmq checkpoint as a GGUF file for llama.cpp (RTN on the GGUF grid)."

GGUF_TYPES = ("Q8_0", "Q4_0", "Q4_K")
FLOAT_TYPES = ("f16", "f32")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-llada", help="shipped model name or checkpoint folder")
    parser.add_argument("--format", choices=("gguf",), default="gguf", help="output format (gguf)")
    parser.add_argument("--gguf-type", choices=GGUF_TYPES, default="Q8_0", help="type of the block linears")
    parser.add_argument(
        "--float-type",
        choices=FLOAT_TYPES,
        default="f16",
        help="type of embedding, head and other 2-D tensors",
    )
    parser.add_argument("--out", type=Path, required=True, help="output .gguf file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")


def check(args: argparse.Namespace) -> None:
    check_model(args.model)
    if args.out.suffix.lower() != ".gguf":
        raise ValueError(f"--out {args.out}: name the file *.gguf")
    if args.out.exists() and not args.overwrite:
        raise ValueError(f"{args.out} exists; pass --overwrite or another --out")


def run(args: argparse.Namespace) -> int:
    from dllm_bench.commands.work import export

    return export.run(args)
