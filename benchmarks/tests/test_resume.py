"""Resume safety: bit-identical resumes across recipes, no pickle ever read, refused mismatches, one run per
work folder, readable errors for a damaged work directory, and the CLI's announcement and Ctrl-C line."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from dllm_bench.cli import main
from dllm_bench.loading import load_any
from dllm_bench.pipeline import FolderBusyError, FolderLock, SnapshotError, quantize_model
from dllm_bench.recipes import Recipe, load_recipe
from dllm_sampler import DiffusionLM, save
from dllm_sampler.testing import CHAR_VOCAB, random_char_model

SMALL_CALIBRATION = {"builder": "random", "params": {"num_samples": 6, "seq_len": 24}, "batch_size": 4}


def small(name: str, scheme: str) -> Recipe:
    data = load_recipe(name, scheme=scheme).to_dict()
    return Recipe.model_validate({**data, "calibration": SMALL_CALIBRATION})


class SimulatedKill(Exception):
    pass


def crash_after(block: int):
    def hook(index: int) -> None:
        if index == block:
            raise SimulatedKill

    return hook


def interrupted(arch: str | DiffusionLM, recipe: Recipe, work: Path, seed: int = 0) -> None:
    """Leave ``work`` as a run of ``arch``'s random model (or of a given model) killed right after block 0
    was checkpointed."""
    dlm = random_char_model(arch, seed) if isinstance(arch, str) else arch
    with pytest.raises(SimulatedKill):
        quantize_model(dlm, recipe, work_dir=work, progress=False, on_block_done=crash_after(0))


def assert_same_model(a: DiffusionLM, b: DiffusionLM) -> None:
    assert [(n, type(m)) for n, m in a.model.named_modules()] == [
        (n, type(m)) for n, m in b.model.named_modules()
    ]
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    ids = torch.randint(4, CHAR_VOCAB, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(a.logits(ids), b.logits(ids))


@pytest.mark.parametrize(
    ("arch", "name", "scheme"),
    [
        ("dream", "qdlm-quarot", "W4A4"),  # global stage: untied head, head rotations, R3, Q/K/V sites
        ("llada", "quant-dllm", "W2A16g16"),  # multi-binary planes
        ("llada", "qdlm-duquant", "W4A4"),  # shared block rotations, asymmetric activations
    ],
)
def test_resume_is_bit_identical(tmp_path: Path, arch: str, name: str, scheme: str) -> None:
    recipe = small(name, scheme)
    straight = random_char_model(arch)
    quantize_model(straight, recipe, progress=False)
    work = tmp_path / "work"
    interrupted(arch, recipe, work)
    assert not list(work.glob("*.pt"))
    resumed = random_char_model(arch)
    done: list[int] = []
    quantize_model(resumed, recipe, work_dir=work, progress=False, on_block_done=done.append)
    assert done == [1]
    assert_same_model(straight, resumed)


PAYLOAD = textwrap.dedent(
    """
    import pathlib
    pathlib.Path({marker!r}).write_text("pwned")
    """
)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (PAYLOAD.format(marker=str(self.marker)),))


def _plant_pickles(work: Path, marker: Path) -> None:
    for name in ("global.pt", "block-0000.pt", "block-0001.pt", "hidden-0001.pt"):
        (work / name).write_bytes(pickle.dumps(_Payload(marker)))


def test_planted_pickles_never_run(tmp_path: Path) -> None:
    recipe = small("gptq", "W4A16g16")
    work, marker = tmp_path / "work", tmp_path / "pwned"
    interrupted("llada", recipe, work)
    _plant_pickles(work, marker)
    resumed = random_char_model("llada")
    quantize_model(resumed, recipe, work_dir=work, progress=False)  # the genuine snapshots are used
    assert not marker.exists()

    # a crafted folder: a copied manifest, progress saying block 0 is done, and only pickles
    crafted = tmp_path / "crafted"
    crafted.mkdir()
    (crafted / "manifest.json").write_text((work / "manifest.json").read_text())
    (crafted / "progress.json").write_text(json.dumps({"global_done": True, "next_block": 1}))
    _plant_pickles(crafted, marker)
    with pytest.raises(SnapshotError, match="--restart"):
        quantize_model(random_char_model("llada"), recipe, work_dir=crafted, progress=False)
    assert not marker.exists()


def test_a_work_dir_of_other_weights_is_refused(tmp_path: Path) -> None:
    recipe = small("rtn", "W4A16g16")
    work = tmp_path / "work"
    interrupted("llada", recipe, work, seed=0)
    with pytest.raises(ValueError, match="different weights") as caught:
        quantize_model(random_char_model("llada", seed=1), recipe, work_dir=work, progress=False)
    assert "--restart" in str(caught.value)
    wider = random_char_model("llada")
    wider.model.to(torch.float64)
    with pytest.raises(ValueError, match="different dtype, weights"):
        quantize_model(wider, recipe, work_dir=work, progress=False)


def test_a_damaged_snapshot_is_reported_not_loaded(tmp_path: Path) -> None:
    recipe = small("rtn", "W4A16g16")
    work = tmp_path / "work"
    interrupted("llada", recipe, work)
    block = work / "block-0000.safetensors"
    block.write_bytes(block.read_bytes()[:100])
    with pytest.raises(SnapshotError, match="block-0000"):
        quantize_model(random_char_model("llada"), recipe, work_dir=work, progress=False)
    interrupted("llada", recipe, tmp_path / "other")
    meta = json.loads((tmp_path / "other" / "block-0000.json").read_text())
    meta["layers"] = {"no.such.layer": next(iter(meta["layers"].values()))}
    (tmp_path / "other" / "block-0000.json").write_text(json.dumps(meta))
    with pytest.raises(SnapshotError, match="does not fit the model"):
        quantize_model(random_char_model("llada"), recipe, work_dir=tmp_path / "other", progress=False)


HOLDER = textwrap.dedent(
    """
    import sys, time
    from dllm_bench.pipeline import FolderLock
    with FolderLock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


def test_one_run_per_work_folder(tmp_path: Path) -> None:
    work = tmp_path / "work"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(work)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderBusyError, match=f'"pid": {holder.pid}'):
            quantize_model(
                random_char_model("llada"), small("rtn", "W4A16g16"), work_dir=work, progress=False
            )
        assert not (work / "manifest.json").exists()
    finally:
        holder.communicate("done\n", timeout=60)
    with FolderLock(work), FolderLock(work):  # free again, and re-entrant within a process
        pass


def test_cli_announces_resumes_and_restarts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "model"
    save(random_char_model("llada"), model)
    out = tmp_path / "q"
    recipe = small("rtn", "W4A16g16")
    recipe_file = tmp_path / "rtn.yaml"
    recipe_file.write_text(recipe.to_yaml())
    interrupted(load_any(str(model)), recipe, out.with_name("q.work"))
    argv = [
        "quantize",
        "--model",
        str(model),
        "--out",
        str(out),
        "--recipe",
        str(recipe_file),
        "--no-progress",
    ]

    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "found an interrupted run in" in printed and "1 block(s) done" in printed
    assert not out.with_name("q.work").exists()

    save(random_char_model("llada", seed=1), tmp_path / "other")  # same config, other weights
    interrupted(load_any(str(tmp_path / "other")), recipe, out.with_name("q.work"))
    assert main([*argv, "--overwrite"]) == 2
    assert "(different weights)" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--restart"]) == 0
    assert "--restart: discarding" in capsys.readouterr().out


def test_ctrl_c_prints_one_line_saying_how_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dllm_bench.commands.work.quantize as command

    def ctrl_c_after_block_0(index: int) -> None:
        raise KeyboardInterrupt

    def stopped(*args, **kwargs):
        return quantize_model(*args, **kwargs, on_block_done=ctrl_c_after_block_0)

    monkeypatch.setattr(command, "quantize_model", stopped)
    model = tmp_path / "model"
    save(random_char_model("llada"), model)
    argv = ["quantize", "--model", str(model), "--out", str(tmp_path / "q"), "--recipe", "rtn"]
    assert main([*argv, "--scheme", "W4A16g16", "--no-progress"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "1 block(s) done" in err[0] and "run the same command again to resume" in err[0].lower()


def test_sigterm_is_handled_like_ctrl_c(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dllm_bench.commands.work.quantize as command

    def terminated_after_block_0(index: int) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def stopped(*args, **kwargs):
        return quantize_model(*args, **kwargs, on_block_done=terminated_after_block_0)

    monkeypatch.setattr(command, "quantize_model", stopped)
    before = signal.getsignal(signal.SIGTERM)
    model = tmp_path / "model"
    save(random_char_model("llada"), model)
    argv = ["quantize", "--model", str(model), "--out", str(tmp_path / "q"), "--recipe", "rtn"]
    assert main([*argv, "--scheme", "W4A16g16", "--no-progress"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 block(s) done" in err[0]
    assert signal.getsignal(signal.SIGTERM) is before  # the CLI's handler is gone again
    assert not (tmp_path / "q").exists()
    assert not [p.name for p in (tmp_path / "q.work").iterdir() if p.name.endswith(".tmp")]
