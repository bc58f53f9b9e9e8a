"""``python -m dllm_bench.llamacpp``: the llama.cpp runtime benchmark of one model (see run.py).

    uv run python -m dllm_bench.llamacpp --model tiny-llada --problems 200 \\
        --llama-cpp ~/.cache/dllmq/llama.cpp --work ~/.cache/dllmq/llamacpp-work \\
        --out docs/llamacpp/tiny-llada.json [--gguf "dllmq GPTQ Q4_0=path.gguf" ...]

Rows: dllmq's own PyTorch sampler (the reference), the f32 conversion, ``--quantize`` types of
llama-quantize without and with an imatrix, and each ``--gguf LABEL=PATH``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dllm_sampler import load
from dllm_sampler.tasks.arithmetic import heldout_problems, parse_answer
from dllm_sampler.tasks.evaluate import generate_answers
from dllm_sampler.tasks.tokenizer import SPECIAL_TOKENS

from dllm_bench.llamacpp.command import SAMPLERS
from dllm_bench.llamacpp.prepare import LlamaCpp, calibration_text, float_gguf, imatrix, quantized_gguf
from dllm_bench.llamacpp.run import Row, load_results, machine, run_row, save_results

DEFAULT_SAMPLER = {"llada": "confidence", "dream": "confidence"}
"""The CLI settings closest to each model's dllmq sampler (docs/llamacpp.md gives the measurements)."""


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dllm_bench.llamacpp", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny-llada", help="shipped model name or model folder")
    p.add_argument("--problems", type=int, default=200, help="held-out problems (the first N)")
    p.add_argument(
        "--llama-cpp", type=Path, default=Path.home() / ".cache/dllmq/llama.cpp", help="build.sh's folder"
    )
    p.add_argument("--work", type=Path, default=Path.home() / ".cache/dllmq/llamacpp-work", help="GGUF files")
    p.add_argument("--out", type=Path, required=True, help="results JSON (resumed when it exists)")
    p.add_argument("--quantize", default="Q8_0,Q4_0,Q4_K_M", help="llama-quantize types, comma separated")
    p.add_argument("--no-imatrix", action="store_true", help="skip the imatrix rows")
    p.add_argument("--no-float", action="store_true", help="skip the f32 row")
    p.add_argument("--gguf", action="append", default=[], metavar="LABEL=PATH", help="an extra GGUF row")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), help="CLI sampler settings (default: per arch)")
    args = p.parse_args(argv)
    if args.problems < 1:
        p.error(f"--problems must be positive, got {args.problems}")
    for item in args.gguf:
        label, _, path = item.partition("=")
        if not label or not Path(path).is_file():
            p.error(f"--gguf {item!r}: expected LABEL=PATH of an existing file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    llama = LlamaCpp(args.llama_cpp.expanduser())
    binary = llama.binary("llama-diffusion-cli")
    dlm = load(args.model, dtype="float32")
    arch = dlm.arch
    sampler = SAMPLERS[args.sampler or DEFAULT_SAMPLER[arch]]
    problems = heldout_problems(args.problems)
    work = args.work.expanduser()
    work.mkdir(parents=True, exist_ok=True)

    results = load_results(args.out)
    results["meta"] = {
        "model": args.model,
        "problems": args.problems,
        "llama.cpp": llama.version(),
        "machine": machine(),
        "sampler": args.sampler or DEFAULT_SAMPLER[arch],
        "threads": 1,
    }
    ref = results.get("dllmq")
    if ref is None or len(ref["texts"]) != len(problems):
        texts = generate_answers(dlm, problems)
        for token in SPECIAL_TOKENS:
            texts = [t.replace(token, "") for t in texts]
        exact = sum(parse_answer(t) == p.answer for t, p in zip(texts, problems, strict=True))
        results["dllmq"] = ref = {"texts": texts, "exact": exact, "n": len(problems)}
        save_results(args.out, results)
    print(f"dllmq (PyTorch f32): {ref['exact']}/{len(problems)}", flush=True)

    f32 = float_gguf(llama, args.model, work)
    rows = [] if args.no_float else [Row("llama.cpp f32", f32, sampler)]
    types = [t for t in args.quantize.split(",") if t]
    rows += [Row(f"llama-quantize {t}", quantized_gguf(llama, f32, t), sampler) for t in types]
    if not args.no_imatrix and types:
        matrix = imatrix(llama, f32, calibration_text(work / "calibration.txt"))
        rows += [
            Row(f"llama-quantize {t} + imatrix", quantized_gguf(llama, f32, t, matrix), sampler)
            for t in types
        ]
    for item in args.gguf:
        label, _, path = item.partition("=")
        rows.append(Row(label, Path(path), sampler))

    for row in rows:
        record = run_row(results, args.out, row, binary, arch, dlm.tokenizer, problems, ref["texts"])
        print(
            f"{row.label}: {record['exact']}/{len(problems)} exact, {record['same_as_dllmq']} same as dllmq, "
            f"{record['key']['bytes'] / 2**20:.2f} MiB, {record['ms_per_step']} ms/step",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
