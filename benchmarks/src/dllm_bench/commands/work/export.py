"""The work of ``dllmq export`` (arguments and docs: `dllm_bench.commands.export`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from dllm_weightquant.gguf import quantize_for_gguf, write_gguf

from dllm_bench.loading import _provenance_model, is_quantized_folder, load_any


def source_name(model: str) -> str:
    """The float model to record: the provenance's for a quantized folder, else the model itself."""
    if is_quantized_folder(model):
        return _provenance_model(model)
    return str(Path(model).resolve()) if Path(model).is_dir() else model


def run(args: argparse.Namespace) -> int:
    dlm = load_any(args.model, dtype=torch.float32)
    quantize_for_gguf(dlm, args.gguf_type)
    path = write_gguf(
        dlm,
        args.out,
        gguf_type=args.gguf_type,
        float_type=args.float_type,
        source_model=source_name(args.model),
    )
    print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB, {args.gguf_type})")
    print(f'check it: dllmq generate --model {path} --prompt "..."')
    return 0
