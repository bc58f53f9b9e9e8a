"""Evaluate the tiny reference models and write docs/tiny_models.md.

    uv run python tools/eval_tiny.py [--models tiny-llada tiny-dream] [--n 500] [--doc docs/tiny_models.md]

For each model (a packaged name or a checkpoint folder): exact-match accuracy on the first ``--n`` held-out
arithmetic problems with the architecture's default sampler (answer length, steps and block set to the
answer and its EOS, ``ANSWER_TOKENS + 1`` tokens; LLaDA2's block sampler keeps its blocks of 32 and
takes up to one step per token; see ``dllm_sampler.tasks.evaluate``), overall and by
difficulty, in float32 and in the stored bf16; the held-out stdlib code ELBO NLL per token (the model's
own estimator, a bidirectional forward: for LLaDA2, trained block-causally, a number to compare with
itself only); the accuracy of every digit of the generated answers (fp32), by part of the answer; and the
accuracy-vs-steps curve from the ``train_log.jsonl`` saved next to the checkpoint.
Results also go to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from dllm_sampler import load
from dllm_sampler.registry import resolve
from dllm_sampler.tasks import (
    ANSWER_PARTS,
    answer_part_accuracy,
    code_nll,
    generate_answers,
    heldout_problems,
    score_answers,
)
from dllm_sampler.tasks.code import corpus_id

DIFFICULTIES = ("easy", "medium", "hard")


def evaluate(name: str, n: int, threads: int, code_chunks: int, mc_num: int) -> dict:
    """All numbers of one model (see the module docstring)."""
    torch.set_num_threads(threads)
    folder = resolve(name)
    problems = heldout_problems(n)
    result: dict = {"model": name, "folder": str(folder), "n": n}
    for dtype in ("float32", "bfloat16"):
        dlm = load(name, dtype=dtype)
        start = time.time()
        texts = generate_answers(dlm, problems)
        report = score_answers(texts, problems)
        result[dtype] = {
            "accuracy": report.accuracy,
            "by_difficulty": {k: list(v) for k, v in sorted(report.by_difficulty.items())},
            "parts": answer_part_accuracy(texts, problems),
            "seconds": round(time.time() - start, 1),
        }
    dlm = load(name, dtype="float32")
    result["arch"] = dlm.arch
    result["params"] = sum(p.numel() for p in dlm.model.parameters())
    result["code_nll"] = code_nll(dlm, n_chunks=code_chunks, mc_num=mc_num)
    result["code_chunks"], result["mc_num"] = code_chunks, mc_num
    log = folder / "train_log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    result["curve"] = [
        (r["step"], r["accuracy"], r.get("char_accuracy", float("nan")))
        for r in records
        if r.get("event") == "eval"
    ]
    result["train"] = next((r for r in records if r.get("event") == "start"), {})
    result["done"] = next((r for r in records if r.get("event") == "done"), {})
    speeds = [r["steps_per_s"] for r in records if "steps_per_s" in r]
    result["steps_per_s"] = speeds[-1] if speeds else None
    return result


def _pct(correct: int, total: int) -> str:
    return f"{100 * correct / total:.1f}% ({correct}/{total})" if total else "-"


def render(results: list[dict], n: int) -> str:
    """The markdown results section."""
    lines = [
        f"## Results (first {n} problems of `heldout_problems()`; code: held-out stdlib chunks)",
        "",
        "| model | arch | params | exact (fp32) | exact (bf16) | easy | medium | hard | code NLL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    chunks, mc = results[0]["code_chunks"], results[0]["mc_num"]
    for r in results:
        by = r["float32"]["by_difficulty"]
        cells = [_pct(*by.get(d, (0, 0))) for d in DIFFICULTIES]
        lines.append(
            f"| {r['model']} | {r['arch']} | {r['params']:,} | {100 * r['float32']['accuracy']:.1f}% | "
            f"{100 * r['bfloat16']['accuracy']:.1f}% | {' | '.join(cells)} | {r['code_nll']:.3f} |"
        )
    lines += [
        "",
        "Difficulty is the number of carries and borrows over both operations: easy 0-1, medium 2-3,",
        "hard 4 or more. Code NLL (nats/token) is the model's own ELBO estimator (LLaDA's or Dream's) over",
        f"{chunks} held-out 63-token chunks, {mc} Monte-Carlo samples each, BOS as the prefix; compare a",
        "model with itself (e.g. before and after quantization), not LLaDA with Dream.",
        "",
        "Where the generated answers (fp32) go wrong: % of problems with the right digit in each group of",
        "the answer, places least significant first (operands a, b, c; carry rows; results r and f).",
        "",
        f"| model | {' | '.join(ANSWER_PARTS)} |",
        "|---|" + "---|" * len(ANSWER_PARTS),
    ]
    for r in results:
        parts = r["float32"].get("parts")
        cells = [" ".join(f"{100 * v:.0f}" for v in parts[name]) if parts else "-" for name in ANSWER_PARTS]
        lines.append(f"| {r['model']} | {' | '.join(cells)} |")
    lines += [
        "",
        "### Held-out accuracy during training (64 monitoring problems, not among the evaluated ones)",
        "",
    ]
    for r in results:
        train, done = r["train"].get("args", {}), r["done"]
        lines.append(
            f"{r['model']}: {done.get('steps', '?')} steps in {done.get('elapsed_s', '?')} s "
            f"(last logged rate {r['steps_per_s']} steps/s, {train.get('threads', '?')} thread(s)), "
            f"batch {train.get('batch', '?')}."
        )
        lines += ["", "| step | exact | answer characters right |", "|---|---|---|"]
        lines += [f"| {step} | {100 * a:.0f}% | {100 * c:.0f}% |" for step, a, c in r["curve"]]
        lines += [""]
    lines += [f"Code corpus: {corpus_id()}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny-llada", "tiny-dream"])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--code-chunks", type=int, default=64, help="held-out code chunks for the NLL")
    parser.add_argument("--mc-num", type=int, default=32, help="Monte-Carlo samples per code chunk")
    parser.add_argument("--doc", type=Path, default=Path("docs/tiny_models.md"))
    parser.add_argument("--json", type=Path, default=Path("runs/eval_tiny.json"))
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="render the results section from these saved --json files instead of evaluating (e.g. one "
        "file per model, evaluated side by side)",
    )
    args = parser.parse_args()
    if args.from_json:
        missing = [str(path) for path in args.from_json if not path.is_file()]
        if missing:
            parser.error(f"no such --from-json file: {', '.join(missing)} (write one with --json)")
        results = [r for path in args.from_json for r in json.loads(path.read_text())]
        for r in results:
            evaluated = sum(total for _, total in r["float32"]["by_difficulty"].values())
            if evaluated != args.n:
                parser.error(f"{r['model']} was evaluated on {evaluated} problems, not --n {args.n}")
    else:
        results = [
            evaluate(name, args.n, args.threads, args.code_chunks, args.mc_num) for name in args.models
        ]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    for r in results:
        print(json.dumps({k: r[k] for k in ("model", "float32", "bfloat16", "code_nll")}))
    marker = "<!-- results -->"
    if args.doc.is_file() and marker in args.doc.read_text():
        head = args.doc.read_text().split(marker)[0]
        args.doc.write_text(f"{head}{marker}\n\n{render(results, args.n)}")
        print(f"wrote {args.doc}")
    else:
        print(render(results, args.n))
        print(f"{args.doc} has no '{marker}' line; results printed above, not written")


if __name__ == "__main__":
    main()
