"""``dllmq calib build``: build a diffusion-aware calibration set and save it for dllmq or for other tools.

    dllmq calib build --builder tmas|mcs|plain|random --out DIR [--format hf|dllmq] [--model M]
                      [--source arithmetic|code|[CORPUS=]PATH] [--samples N] [--seq-len N]
                      [--prompts N] [--param KEY=VALUE ...] [--sampler KEY=VALUE ...]

The builders are ``dllm_calib``'s (docs/methods.md): ``plain`` clean text windows, ``random`` windows
masked at random times, ``mcs`` Quant-dLLM's masked calibration simulation, ``tmas`` DLLMQuant's states
drawn from the float model's own sampler trajectory (the slow one: a progress bar follows the sampler).

``--format hf`` (default) writes a Hugging Face dataset folder without needing the ``datasets`` package:
``train.jsonl`` with one ``{"input_ids": [...], "attention_mask": [...]}`` record per state (masked
positions hold the model's mask token id), a dataset card ``README.md`` whose header tells
``datasets.load_dataset(DIR, split="train")`` where the rows are, and ``dllmq_calibration.json`` (mask token,
builder, parameters, provenance). llm-compressor, GPTQModel and AutoAWQ take those rows as their
calibration data; a dllmq recipe reads them back with ``calibration.path: DIR/train.jsonl``. It is not
``datasets.save_to_disk``'s Arrow layout, so read it with ``load_dataset``, not ``load_from_disk``.
``--format dllmq`` writes the full ``CalibrationSet`` (masks, steps, confidence) for
``calibration.path: DIR``. The folder appears only when complete; an existing non-empty ``--out`` is
refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dllm_bench.commands._checks import (
    add_device_and_dtype,
    check_calib_path,
    check_model,
    check_out_folder,
    check_positive,
)

HELP = "Build a calibration set (tmas, mcs, plain, random) and save it as a dataset folder for other tools."

BUILDER_NAMES = ("plain", "random", "mcs", "tmas")
FORMATS = ("hf", "dllmq")
TEXT_SOURCES = ("arithmetic", "code")


def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with the value read as JSON when it parses (numbers, true/false, lists), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="{build}")
    build = actions.add_parser(
        "build",
        help="build a calibration set and write it to --out",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("--builder", required=True, choices=BUILDER_NAMES, help="calibration builder")
    build.add_argument("--out", type=Path, required=True, help="output folder (must not hold files yet)")
    build.add_argument(
        "--format",
        choices=FORMATS,
        default="hf",
        help="hf: train.jsonl + dataset card for datasets.load_dataset and other PTQ tools (written without "
        "the datasets package); dllmq: the full CalibrationSet (default hf)",
    )
    build.add_argument("--model", default="tiny-llada", help="shipped model name or checkpoint folder")
    build.add_argument(
        "--source",
        default="arithmetic",
        help="text: arithmetic, code, or a local corpus [CORPUS=]PATH: a .txt / .jsonl / .parquet file, a "
        "saved datasets folder or a folder of shards; CORPUS (wikitext2, pile, c4) reads it with that "
        "corpus's conventions (default arithmetic)",
    )
    build.add_argument(
        "--field", default="text", help="text field of .jsonl / parquet / dataset records (default text)"
    )
    build.add_argument("--split", help="split of a saved DatasetDict or shard folder (default: train)")
    build.add_argument("--samples", type=int, help="states to build (the builder's num_samples)")
    build.add_argument("--seq-len", type=int, help="tokens per window (plain, random, mcs)")
    build.add_argument("--prompts", type=int, help="tmas: prompts to run the sampler on (num_prompts)")
    build.add_argument(
        "--param",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other builder parameter, e.g. gamma=0.5 or quotas=[0.25,0.25,0.25,0.25] (repeatable)",
    )
    build.add_argument(
        "--sampler",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="tmas: sampler setting over the model's defaults, e.g. steps=64 (repeatable)",
    )
    build.add_argument("--seed", type=int, default=0, help="seed of the builder (default 0)")
    add_device_and_dtype(build)
    build.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def builder_params(args: argparse.Namespace) -> dict[str, Any]:
    """The builder's parameters: ``--param`` entries, then the named flags given, and the seed."""
    named = {"num_samples": args.samples, "seq_len": args.seq_len, "num_prompts": args.prompts}
    return {"seed": args.seed, **dict(args.param), **{k: v for k, v in named.items() if v is not None}}


def check(args: argparse.Namespace) -> None:
    check_positive(args, {"samples": 1, "seq_len": 2, "prompts": 1, "seed": 0})
    if args.builder == "tmas" and args.seq_len is not None:
        raise ValueError(
            "--seq-len applies to the window builders (plain, random, mcs); tmas takes --prompts"
        )
    if args.builder != "tmas" and (args.prompts is not None or args.sampler):
        raise ValueError(f"--prompts and --sampler apply to the tmas builder, not {args.builder}")
    if args.source not in TEXT_SOURCES:
        check_calib_path(args.source, "--source")
    elif args.split is not None:
        raise ValueError(f"--split describes a corpus folder; --source {args.source} is a shipped text")
    check_model(args.model)
    check_out_folder(args.out)
    if args.out.is_dir() and any(args.out.iterdir()):
        raise ValueError(f"--out {args.out} exists and is not empty; choose a new folder or empty this one")


def run(args: argparse.Namespace) -> int:
    from dllm_bench.commands.work import calib

    return calib.run(args)
