"""``dllmq quantize``: run a recipe on a model with the layer-wise pipeline and write the checkpoint.

With no arguments it quantizes the shipped tiny-llada with the dllmquant recipe into
``runs/tiny-llada-dllmquant`` and prints float vs quantized arithmetic accuracy on held-out problems.
An interrupted run (Ctrl-C, SIGTERM, a crash) resumes from its work directory (``<out>.work``) when started
again with the same arguments: the command says what it found there, and resumes only if the recipe,
scheme, model (config and weights), dtype and calibration match (docs/resume.md); ``--restart`` discards it.
The output and work folders are locked for the run, so a second run on the same ``--out`` is refused.

``--calib wikitext2=PATH`` (also ``pile=PATH``, ``c4=PATH`` or a plain ``PATH``) calibrates on a local
corpus in the window shape of the recipe's ``paper_corpus`` (docs/calibration.md); without it the recipe's
own source is used (the shipped tiny-model text for the presets). The command prints which corpus it used.

``--format gguf --gguf-type Q4_0|Q8_0|Q4_K`` quantizes onto llama.cpp's grid of that type (the scale rounding
of the format inside the quantizer) and writes ``--out`` as one GGUF file (docs/gguf.md); weight-only (A16)
recipes without online rotations only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dllm_bench.commands._checks import (
    add_device_and_dtype,
    check_calib_path,
    check_model,
    check_out_folder,
    check_positive,
    shipped_recipes,
)

HELP = "Quantize a diffusion LM with a recipe (default: tiny-llada with dllmquant) and export the checkpoint."

DEFAULT_EVAL_PROBLEMS = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-llada", help="shipped model name or checkpoint folder")
    parser.add_argument(
        "--recipe",
        default="dllmquant",
        help=f"shipped recipe ({', '.join(shipped_recipes())}) or YAML file",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (default runs/<model>-<recipe>[-<scheme>], replaced if present)",
    )
    parser.add_argument(
        "--scheme",
        help="bit setting overriding the recipe's, e.g. W4A16, W3A16, W8A8, W4A4, W4A4KV16, W4A16g64",
    )
    add_device_and_dtype(parser, "where each block is quantized")
    parser.add_argument(
        "--calib-samples", type=int, help="number of calibration states (overrides the recipe)"
    )
    parser.add_argument(
        "--calib",
        metavar="[CORPUS=]PATH",
        help="calibration corpus: wikitext2=PATH, pile=PATH, c4=PATH or a plain PATH (a .txt, "
        ".jsonl[.gz|.zst] or .parquet file, a datasets save_to_disk folder or a folder of shards), read in "
        "the recipe's paper window shape (default: the recipe's source)",
    )
    parser.add_argument(
        "--calib-field", help="text field of .jsonl / parquet / dataset records (default text)"
    )
    parser.add_argument("--calib-split", help="split of a saved DatasetDict or shard folder (default: train)")
    parser.add_argument("--work-dir", type=Path, help="checkpoint folder for resuming (default <out>.work)")
    parser.add_argument("--keep-work", action="store_true", help="keep the work folder after success")
    parser.add_argument(
        "--restart", action="store_true", help="discard what an interrupted run left in the work folder"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument(
        "--eval-problems",
        type=int,
        help=f"held-out arithmetic problems to score float vs quantized (default {DEFAULT_EVAL_PROBLEMS} for "
        "models trained on the arithmetic task, else 0)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--format", choices=("dllmq", "gguf"), default="dllmq", help="checkpoint folder or a GGUF file"
    )
    parser.add_argument(
        "--gguf-type", choices=("Q8_0", "Q4_0", "Q4_K"), default="Q4_K", help="GGUF type of the linears"
    )


def default_out(args: argparse.Namespace) -> Path:
    """``runs/<model>-<recipe>[-<scheme>]``: where the checkpoint goes without ``--out``."""
    model = Path(args.model).name or "model"
    recipe = Path(args.recipe).stem
    suffix = f"-{args.scheme}" if args.scheme else ""
    if getattr(args, "format", "dllmq") == "gguf":
        return Path("runs") / f"{model}-{recipe}{suffix}-{args.gguf_type}.gguf"
    return Path("runs") / f"{model}-{recipe}{suffix}"


def check(args: argparse.Namespace) -> None:
    check_model(args.model)
    if args.recipe not in shipped_recipes() and not Path(args.recipe).expanduser().is_file():
        raise FileNotFoundError(
            f"no recipe named {args.recipe!r} and no such file; shipped recipes: "
            f"{', '.join(shipped_recipes())}"
        )
    check_positive(args, {"calib_samples": 1, "eval_problems": 0})
    out = args.out or default_out(args)
    if args.format == "gguf":
        if out.suffix.lower() != ".gguf":
            raise ValueError(f"--out {out}: with --format gguf name the output file *.gguf")
        if args.out is not None and out.exists() and not args.overwrite:
            raise ValueError(f"{out} exists; pass --overwrite or another --out")
    else:
        check_out_folder(out)
    if args.out is not None and out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ValueError(f"{out} exists and is not empty; pass --overwrite or another --out")
    if args.work_dir is not None:
        check_out_folder(args.work_dir, "--work-dir")
    if args.calib is not None:
        check_calib_path(args.calib)
    elif args.calib_field is not None or args.calib_split is not None:
        raise ValueError("--calib-field and --calib-split describe a --calib corpus; pass --calib too")


def run(args: argparse.Namespace) -> int:
    from dllm_bench.commands.work import quantize

    return quantize.run(args)
