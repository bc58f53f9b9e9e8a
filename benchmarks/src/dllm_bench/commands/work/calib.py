"""The work of ``dllmq calib build`` (arguments and formats: `dllm_bench.commands.calib`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dllm_calib import CalibrationSet, parse_calib_spec
from dllm_sampler import DiffusionLM
from dllm_sampler.atomic import atomic_folder
from pydantic import ValidationError

from dllm_bench.commands.calib import builder_params
from dllm_bench.devices import compute_dtype, parse_device
from dllm_bench.loading import load_any
from dllm_bench.pipeline import prepare_calibration
from dllm_bench.recipes import CalibrationSpec
from dllm_bench.recipes.errors import validation_message

DATA_FILE = "train.jsonl"
CARD_FILE = "README.md"
META_FILE = "dllmq_calibration.json"
FORMAT_NAME = "dllmq-calibration-jsonl"


def _spec(args: argparse.Namespace) -> CalibrationSpec:
    """The recipe-style calibration spec the flags describe (validated like a recipe's); a ``--source``
    ``[CORPUS=]PATH`` is read as ``dllmq quantize --calib`` reads it (`CalibrationSpec.with_corpus`)."""
    data = {
        "builder": args.builder,
        "params": builder_params(args),
        "field": args.field,
        "sampler": dict(args.sampler) or None,
    }
    try:
        spec = CalibrationSpec.model_validate(data)
    except ValidationError as err:
        raise ValueError(validation_message(err, "dllmq calib build", CalibrationSpec)) from None
    name, path = parse_calib_spec(args.source)
    return spec.with_corpus(name, path, args.field, args.split)


def _card(meta: dict[str, Any]) -> str:
    """The dataset card: a YAML header naming the data file, and what the rows are."""
    return f"""---
configs:
- config_name: default
  data_files:
  - split: train
    path: {DATA_FILE}
---
# dllmq calibration set ({meta["builder"]}, {meta["num_rows"]} rows)

Built by `dllmq calib build --builder {meta["builder"]}` from `{meta["source"]}` text with `{meta["model"]}`.
Each row of `{DATA_FILE}` is one calibration state: `input_ids` (token ids; masked positions hold the mask
token id {meta["mask_token_id"]}) and `attention_mask` (1 on real tokens). `{META_FILE}` records the
builder's parameters and provenance.

    from datasets import load_dataset
    rows = load_dataset("path/to/this/folder", split="train")

llm-compressor (`oneshot(dataset=rows, ...)`), GPTQModel and AutoAWQ calibrate on these rows; a dllmq
recipe reads them with `calibration.path: path/to/this/folder/{DATA_FILE}`.
"""


def _write_hf(cset: CalibrationSet, folder: Path, meta: dict[str, Any]) -> None:
    with (folder / DATA_FILE).open("w", encoding="utf-8") as fh:
        for record in cset.to_calibration_list():
            fh.write(json.dumps(record) + "\n")
    (folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    (folder / CARD_FILE).write_text(_card(meta), encoding="utf-8")


def _meta(args: argparse.Namespace, cset: CalibrationSet, dlm: DiffusionLM) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "version": 1,
        "data_file": DATA_FILE,
        "columns": ["input_ids", "attention_mask"],
        "num_rows": len(cset),
        "mask_token_id": cset.mask_token_id,
        "builder": args.builder,
        "source": args.source,
        "model": args.model,
        "dtype": str(dlm.dtype).removeprefix("torch."),
        "provenance": cset.provenance.to_dict(),
    }


def run(args: argparse.Namespace) -> int:
    spec = _spec(args)
    device = parse_device(args.device)
    dlm = load_any(args.model, dtype=compute_dtype(args.dtype, device), device=device)
    cset = prepare_calibration(spec, dlm, args.seed, progress=not args.no_progress)
    with atomic_folder(args.out) as staging:
        if args.format == "hf":
            _write_hf(cset, staging, _meta(args, cset, dlm))
        else:
            cset.save(staging)
    shown = f"{args.out / DATA_FILE} (rows for other tools)" if args.format == "hf" else str(args.out)
    print(f"built {len(cset)} {args.builder} calibration states from {args.source} with {args.model}")
    print(f"wrote {shown}")
    return 0
