"""``dllmq results``: run the method x bit-setting matrix on the tiny models and rewrite docs/results.md.

Everything after the ``<!-- generated -->`` line of the output file is replaced (the hand-written text
above it stays); the raw numbers go to a JSON file next to it. The default budget (128 problems, every
cell of `dllm_bench.results.default_cells`) is sized to finish within an hour on a 2-core CPU.
``--from-json FILE`` re-renders the markdown from a previous run's raw numbers without running anything.

The JSON is rewritten after every cell (marked ``"complete": false`` until the last one), so a run that is
stopped keeps what it measured; ``--resume`` continues such a run from its JSON, skipping the cells it
already holds (it refuses a JSON made with other evaluation settings or another matrix). A progress bar on
stderr counts the measured models and cells.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dllm_bench.commands._checks import check_input_file, check_model, check_out_file, check_positive

HELP = "Quantize the tiny models with every method at every bit setting and rewrite docs/results.md."

MARKER = "<!-- generated -->"
OUT = {
    "main": Path("docs/results.md"),
    "qdlm": Path("docs/results-qdlm.md"),
    "moe": Path("docs/results-llada2.md"),
}
"""The page each ``--matrix`` rewrites by default."""
MODELS = {"main": ["tiny-llada", "tiny-dream"], "qdlm": ["tiny-llada", "tiny-dream"], "moe": ["tiny-llada2"]}
"""The models each ``--matrix`` runs on by default."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", help="models (default: the matrix's, see MODELS)")
    parser.add_argument("--methods", nargs="+", help="only these recipes (default: all of the matrix)")
    parser.add_argument("--settings", nargs="+", help="only these bit settings (default: all six)")
    parser.add_argument("--problems", type=int, help="held-out problems (default 128)")
    parser.add_argument("--code-chunks", type=int, help="held-out code chunks for the NLL (default 32)")
    parser.add_argument("--mc-num", type=int, help="Monte-Carlo samples per code chunk (default 16)")
    parser.add_argument("--calib-samples", type=int, help="calibration states per recipe (default: recipe's)")
    parser.add_argument(
        "--matrix",
        choices=sorted(OUT),
        default="main",
        help="main: every method at every bit setting (docs/results.md); qdlm: the seed study's presets "
        "(docs/results-qdlm.md); moe: the methods that quantize mixture-of-experts models on tiny-llada2 "
        "(docs/results-llada2.md)",
    )
    parser.add_argument("--out", type=Path, help="markdown file to update (default: the matrix's page)")
    parser.add_argument("--json", type=Path, help="raw numbers (default: --out with .json)")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="only re-render --out from the raw numbers previous runs wrote (no quantization); several "
        "files, e.g. one run per model side by side, are merged",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run: keep the cells its --json file already holds and measure the rest",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def check(args: argparse.Namespace) -> None:
    check_positive(args, {"problems": 1, "code_chunks": 1, "mc_num": 1, "calib_samples": 1})
    args.out = args.out or OUT[args.matrix]
    args.models = args.models or MODELS[args.matrix]
    check_out_file(args.out, "--out")
    if args.from_json is not None:
        for path in args.from_json:
            check_input_file(path, "--from-json")
        return
    for model in args.models:
        check_model(model, "--models")
    check_out_file(args.json or args.out.with_suffix(".json"), "--json")


def run(args: argparse.Namespace) -> int:
    from dllm_bench.commands.work import results

    return results.run(args)
