"""Bad input to every ``dllmq`` command: one line on stderr naming the problem, exit code 2, no traceback,
and nothing written where the output would have gone; ``--help`` and path errors without heavy imports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dllm_bench.cli import main

HEAVY = ("torch", "numba", "matplotlib", "triton", "lm_eval")

BAD_RECIPE = """name: bad
scheme: {weights: {bits: 4, group_size: 16}, activations: 16}
calibration: {builder: plain, params: {num_samples: 2, seq_len: 8}, colour: red}
steps: [{method: rtn, bogus: 1}]
seed: -1
"""


@pytest.fixture(scope="module")
def places(rtn_folders: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The paths the cases name: a plain file, a non-empty folder, a folder that cannot be written to, a
    float and a quantized checkpoint, a truncated copy of the quantized one and an invalid recipe."""
    root = tmp_path_factory.mktemp("bad-inputs")
    float_dir, quantized = rtn_folders
    (root / "file.txt").write_text("not a checkpoint\n")
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("keep me\n")
    truncated = root / "truncated"
    shutil.copytree(quantized, truncated)
    weights = truncated / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    (root / "bad.yaml").write_text(BAD_RECIPE)
    (root / "list.yaml").write_text("- rtn\n- gptq\n")
    if os.geteuid() == 0:  # root writes anywhere a mode allows nothing; /sys refuses new entries even to root
        read_only = "/sys/kernel"
    else:
        (root / "read-only").mkdir(mode=0o500)
        read_only = str(root / "read-only")
    return {
        "tmp": str(root),
        "file": str(root / "file.txt"),
        "full": str(root / "full"),
        "ro": read_only,
        "float": str(float_dir),
        "q": str(quantized),
        "trunc": str(truncated),
        "bad_yaml": str(root / "bad.yaml"),
        "list_yaml": str(root / "list.yaml"),
    }


OUT = ["--out", "{tmp}/out"]
CASES = [
    # dllmq quantize
    (["quantize", "--out", "{file}"], ["{file}", "is an existing file"]),
    (["quantize", "--out", "{file}/q"], ["is below", "which is a file"]),
    (["quantize", "--out", "{ro}/q"], ["cannot write in {ro}"]),
    (["quantize", "--model", "{file}", *OUT], ["--model {file} is a file", "holds config.json"]),
    (["quantize", "--model", "{tmp}/absent", *OUT], ["--model {tmp}/absent", "packaged models"]),
    (["quantize", "--recipe", "{bad_yaml}", *OUT], ["bad.yaml: seed:", "greater than or equal to 0, got -1"]),
    (["quantize", "--recipe", "{bad_yaml}", *OUT], ["bad.yaml: calibration.colour: unknown field (allowed:"]),
    (
        ["quantize", "--recipe", "{bad_yaml}", *OUT],
        ["bad.yaml: steps[0]: step 'rtn'", "unknown keys ['bogus']"],
    ),
    (["quantize", "--recipe", "{list_yaml}", *OUT], ["a recipe is a mapping"]),
    (
        ["quantize", "--recipe", "no-such-recipe", *OUT],
        ["no recipe named 'no-such-recipe'", "shipped recipes"],
    ),
    (["quantize", "--scheme", "W5A16", *OUT], ["bad scheme 'W5A16'", "W<weight bits>A<activation bits>"]),
    (["quantize", "--calib-samples", "0", *OUT], ["--calib-samples must be an integer >= 1"]),
    (["quantize", "--work-dir", "{file}", *OUT], ["--work-dir {file} is an existing file"]),
    (["quantize", "--out", "{full}"], ["{full} exists and is not empty", "--overwrite"]),
    # dllmq generate
    (["generate", "--model", "{trunc}", "--prompt", "x"], ["model.safetensors", "truncated or damaged"]),
    (["generate", "--model", "{file}", "--prompt", "x"], ["is a file"]),
    (["generate", "--model", "{q}", "--prompt", "x", "--steps", "0"], ["--steps must be an integer >= 1"]),
    (["generate", "--model", "{q}", "--prompt", "x", "--device", "gpu0"], ["not a torch device"]),
    # dllmq eval
    (["eval", "--model", "{trunc}"], ["model.safetensors", "truncated or damaged"]),
    (["eval", "--model", "{q}", "--json", "{tmp}"], ["--json {tmp} is a folder"]),
    (["eval", "--model", "{q}", "--json", "{file}/e.json"], ["which is a file"]),
    (["eval", "--model", "{q}", "--json", "{ro}/e.json"], ["cannot write in {ro}"]),
    (["eval", "--model", "{q}", "--ratios", "1.5"], ["--ratios must lie in (0, 1]"]),
    (["eval", "--model", "{q}", "--reference", "{tmp}/absent"], ["--reference {tmp}/absent"]),
    # dllmq analyze
    (["analyze", "outliers", "--model", "{q}", "--out", "{file}"], ["is an existing file"]),
    (["analyze", "outliers", "--model", "{q}", "--buckets", "0", *OUT], ["--buckets must be >= 1"]),
    (["analyze", "outliers", "--model", "{trunc}", *OUT], ["truncated or damaged"]),
    (["analyze", "steps", "--model", "{float}", *OUT], ["--reference is required", "not a quantized folder"]),
    # dllmq bench
    (["bench", "--model", "{file}"], ["is a file"]),
    (["bench", "--json", "{file}/b.json"], ["which is a file"]),
    (["bench", "--layers", "2"], ["add --synthetic"]),
    # dllmq results
    (["results", "--from-json", "{tmp}/nope.json", "--out", "{tmp}/r.md"], ["--from-json", "no such file"]),
    (["results", "--out", "{tmp}"], ["--out {tmp} is a folder"]),
    (["results", "--models", "{tmp}/absent", "--out", "{tmp}/r.md"], ["--models {tmp}/absent"]),
    # dllmq calib build
    (["calib", "build", "--builder", "plain", "--out", "{file}"], ["is an existing file"]),
    (["calib", "build", "--builder", "plain", "--out", "{full}"], ["exists and is not empty"]),
    (["calib", "build", "--builder", "plain", "--out", "{ro}/c"], ["cannot write in {ro}"]),
    (["calib", "build", "--builder", "tmas", "--seq-len", "8", *OUT], ["--seq-len applies to the window"]),
    (["calib", "build", "--builder", "plain", "--param", "gamma=2", *OUT], ["has no parameters ['gamma']"]),
    (
        ["calib", "build", "--builder", "plain", "--source", "{tmp}/none.txt", *OUT],
        ["--source {tmp}/none.txt", "does not exist"],
    ),
    (["calib", "build", "--builder", "plain", "--source", "c4=data.csv", *OUT], ["data.csv does not exist"]),
    (["calib", "build", "--builder", "plain", "--split", "test", *OUT], ["--split describes a corpus"]),
    (["calib", "build", "--builder", "mcs", "--model", "{trunc}", *OUT], ["truncated or damaged"]),
    # dllmq methods
    (["methods", "frobnicate"], ["no registered methods ['frobnicate']"]),
]


def _listing(root: Path) -> dict[str, int]:
    """Every path under ``root`` with its size, to see that a refused command wrote nothing."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file() or p.is_dir()}


@pytest.mark.parametrize(("argv", "words"), CASES, ids=[" ".join(argv[:3]) for argv, _ in CASES])
def test_bad_input_is_one_line_and_writes_nothing(
    argv: list[str], words: list[str], places: dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    root = Path(places["tmp"])
    before = _listing(root)
    capsys.readouterr()
    assert main([arg.format(**places) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert sum(ln.startswith(f"dllmq {argv[0]}: error: ") for ln in err.splitlines()) == 1
    for word in words:
        assert word.format(**places) in err
    assert _listing(root) == before  # no output, staging folder or temporary file left behind


def test_there_are_at_least_thirty_cases_and_every_command_has_some() -> None:
    assert len(CASES) >= 30
    assert {argv[0] for argv, _ in CASES} == {
        "quantize",
        "generate",
        "eval",
        "analyze",
        "bench",
        "results",
        "calib",
        "methods",
    }


def _heavy_after(script: str, tmp_path: Path) -> list[str]:
    """Run ``script`` in a fresh interpreter after importing the CLI; the heavy modules it imported."""
    report = f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    code = f"import json, sys\nfrom dllm_bench.cli import main\n{script}\n{report}"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_and_a_missing_path_import_no_heavy_module(tmp_path: Path) -> None:
    script = """
for argv in (["--help"], ["quantize", "--help"], ["calib", "build", "--help"], ["analyze", "steps", "-h"]):
    try:
        main(argv)
    except SystemExit as stop:
        assert stop.code == 0
assert main(["quantize", "--model", "no/such/folder"]) == 2
assert main(["eval", "--model", "tiny-llada", "--json", "/"]) == 2
assert main(["calib", "build", "--builder", "tmas", "--out", "c", "--model", "absent"]) == 2
"""
    assert _heavy_after(script, tmp_path) == []
