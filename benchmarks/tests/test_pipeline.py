"""The layer-wise pipeline on random tiny LLaDA and Dream models: block runner, quantizers, ignore list,
calibration origins, kill-and-resume, export and reload with the run-time wrappers."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import dllm_bench.pipeline.export as export_module
import dllm_sampler.io as sampler_io
import pytest
import torch
from dllm_actquant import ActQuantLinear, OnlineRotation, VQuantOutput, attention_site_summary
from dllm_bench.loading import load_any
from dllm_bench.pipeline import (
    LOG_FILE,
    RECIPE_FILE,
    RUNTIME_FILE,
    BlockRunner,
    export_model,
    ignored_linears,
    prepare_calibration,
    quantize_model,
    quantized_sites,
)
from dllm_bench.pipeline.export import LEGACY_RUNTIME_TENSORS, RUNTIME_TENSORS
from dllm_bench.pipeline.sites import SITES_FILE
from dllm_bench.recipes import CalibrationSpec, Recipe, load_recipe
from dllm_sampler import CheckpointError, save
from dllm_sampler.testing import CHAR_VOCAB, WriteFaults, random_char_model
from dllm_weightquant import QuantLinear
from safetensors.torch import load_file, save_file
from torch import nn

SMALL_CALIBRATION = {"builder": "random", "params": {"num_samples": 6, "seq_len": 24}, "batch_size": 4}


def small(recipe: Recipe, scheme: str, **changes) -> Recipe:
    """``recipe`` at ``scheme`` with a few short random-mask calibration states."""
    data = recipe.with_scheme(scheme).to_dict()
    data["calibration"] = SMALL_CALIBRATION
    return Recipe.model_validate({**data, **changes})


def probe(seed: int = 1) -> torch.Tensor:
    return torch.randint(4, CHAR_VOCAB, (3, 20), generator=torch.Generator().manual_seed(seed))


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_block_runner_reproduces_the_full_forward(arch: str) -> None:
    dlm = random_char_model(arch)
    ids = probe()
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    seen: list[torch.Tensor] = []
    handle = dlm.topology.final_norm.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    with torch.no_grad():
        dlm.logits(ids, mask)
    handle.remove()
    runner = BlockRunner(dlm)
    hidden = runner.embed(ids, mask)
    for index in range(len(dlm.topology)):
        hidden = runner.run(index, hidden, ids, mask)
    assert torch.equal(hidden, seen[0])
    assert isinstance(dlm.topology.final_norm, nn.Module) and len(runner.blocks) == 2  # modules restored


@pytest.mark.parametrize("arch", ["llada", "dream"])
@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_quantizes_every_block_linear_except_ignored_and_stays_close_at_w8(arch: str, method: str) -> None:
    dlm = random_char_model(arch)
    ids = probe()
    with torch.no_grad():
        reference = dlm.logits(ids)
    skip = dlm.topology.block(1).names["up"]
    recipe = small(
        load_recipe(method), "W8A16g16", ignore=["head", "embedding", f"re:{skip.replace('.', '[.]')}"]
    )
    result = quantize_model(dlm, recipe, progress=False)

    for name in dlm.topology.linear_names():
        module = dlm.model.get_submodule(name)
        assert type(module) is (nn.Linear if name == skip else QuantLinear), name
    assert type(dlm.topology.head) is nn.Linear
    with torch.no_grad():
        assert rel_error(dlm.logits(ids), reference) < 0.02
    assert [r.module for r in result.rows] == [n for n in dlm.topology.linear_names() if n != skip]
    losses = [r.loss for r in result.rows]
    assert all(math.isnan(x) for x in losses) if method == "rtn" else all(x >= 0 for x in losses)
    assert all(0 < r.rel_weight_error < 1e-3 for r in result.rows)
    assert (result.calibration is None) == (method == "rtn")


def test_kill_midway_then_resume_gives_identical_weights(tmp_path) -> None:
    recipe = small(load_recipe("gptq"), "W4A16g16")
    uninterrupted = random_char_model("llada")
    quantize_model(uninterrupted, recipe, progress=False)

    def crash_after_first_block(index: int) -> None:
        if index == 0:
            raise KeyboardInterrupt("simulated kill")

    work = tmp_path / "work"
    crashed = random_char_model("llada")
    with pytest.raises(KeyboardInterrupt):
        quantize_model(crashed, recipe, work_dir=work, progress=False, on_block_done=crash_after_first_block)
    assert json.loads((work / "progress.json").read_text()) == {"global_done": True, "next_block": 1}
    # block 1's saved inputs went through the quantized block 0, not the float one
    saved = load_file(work / "hidden-0001.safetensors")
    ids, mask = saved["0.input_ids"], saved["0.attention_mask"]
    for dlm, same in ((crashed, True), (random_char_model("llada"), False)):
        runner = BlockRunner(dlm)
        through_block0 = runner.run(0, runner.embed(ids, mask), ids, mask)
        assert torch.equal(through_block0, saved["0.hidden"]) is same

    resumed_model = random_char_model("llada")
    done: list[int] = []
    result = quantize_model(resumed_model, recipe, work_dir=work, progress=False, on_block_done=done.append)
    assert done == [1]  # block 0 came from its checkpoint
    expected = uninterrupted.model.state_dict()
    got = resumed_model.model.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    with open(work / LOG_FILE, newline="") as fh:
        logged = [row["module"] for row in csv.DictReader(fh)]
    assert logged == [r.module for r in result.rows] == resumed_model.topology.linear_names()

    with pytest.raises(ValueError, match="left by another run"):
        quantize_model(
            random_char_model("llada"), small(load_recipe("rtn"), "W4A16g16"), work_dir=work, progress=False
        )


def test_resume_restores_global_transforms_and_v_quantizers(tmp_path) -> None:
    recipe = small(load_recipe("dllmquant"), "W8A8")
    ids = probe()
    uninterrupted = random_char_model("dream")
    quantize_model(uninterrupted, recipe, progress=False)

    def crash(index: int) -> None:
        raise RuntimeError("simulated kill")

    work = tmp_path / "work"
    with pytest.raises(RuntimeError):
        quantize_model(random_char_model("dream"), recipe, work_dir=work, progress=False, on_block_done=crash)
    resumed = random_char_model("dream")
    quantize_model(resumed, recipe, work_dir=work, progress=False)
    for block in resumed.topology:
        assert isinstance(block.module("v"), VQuantOutput)  # block 0's V quantizer came from its checkpoint
    with torch.no_grad():
        assert torch.equal(resumed.logits(ids), uninterrupted.logits(ids))


@pytest.mark.parametrize(
    ("arch", "name", "changes"),
    [
        ("llada", "dllmquant", {}),
        (
            "dream",
            "duquant",
            {
                "steps": [
                    {"method": "duquant", "max_rotation_step": 8},
                    {"method": "rtn"},
                    {"method": "act_quant"},
                ]
            },
        ),
    ],
)
def test_activation_recipes_export_and_reload_with_their_wrappers(
    tmp_path, arch: str, name: str, changes: dict
) -> None:
    dlm = random_char_model(arch)
    ids = probe()
    with torch.no_grad():
        reference = dlm.logits(ids)
    result = quantize_model(dlm, small(load_recipe(name), "W8A8", **changes), progress=False)
    with torch.no_grad():
        quantized = dlm.logits(ids)
    assert 0 < rel_error(quantized, reference) < 0.1
    wrapped = [
        n for n in dlm.topology.linear_names() if isinstance(dlm.model.get_submodule(n), OnlineRotation)
    ]
    assert wrapped, "the recipe's rotations are online wrappers"

    folder = export_model(result, tmp_path / "q")
    runtime = json.loads((folder / RUNTIME_FILE).read_text())
    assert set(runtime["linears"]) == set(dlm.topology.linear_names())
    # W8A8 quantizes the attention activations too: V (IA-AQ's or attn_quant's) and the q/k sites
    assert runtime["vquant"] is not None
    assert set(runtime["attention"]) == {b.names["qk"] for b in dlm.topology}
    loaded = load_any(folder)
    assert attention_site_summary(loaded) == attention_site_summary(dlm)
    inner = loaded.model.get_submodule(wrapped[0])
    assert isinstance(inner, OnlineRotation) and isinstance(inner.inner, ActQuantLinear)
    assert isinstance(inner.inner.inner, QuantLinear)
    with torch.no_grad():
        assert rel_error(loaded.logits(ids), quantized) < 1e-3  # packed kernels vs dequantized weights


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_quarot_export_failing_at_any_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = quantize_model(random_char_model("llada"), small(load_recipe("rtn"), "W8A16g16"), progress=False)
    target = export_model(old, tmp_path / "q")
    before = snapshot(target)
    result = quantize_model(
        random_char_model("llada", seed=1), small(load_recipe("quarot"), "W4A4"), progress=False
    )
    faults = WriteFaults(monkeypatch, [sampler_io, export_module])
    faults.wrap_tokenizer(result.dlm)
    hit: list[str] = []

    def unchanged(failed: str) -> None:
        hit.append(failed)
        assert snapshot(target) == before, f"the old checkpoint changed after a failure at {failed}"
        assert [p.name for p in tmp_path.iterdir()] == ["q"], f"leftovers after a failure at {failed}"

    writes = faults.run_each(lambda: export_model(result, target, overwrite=True), unchanged)
    assert writes == len(hit)
    runtime_files = {RUNTIME_FILE, RUNTIME_TENSORS, LOG_FILE, RECIPE_FILE, SITES_FILE}
    assert all(any(name in h for h in hit) for name in runtime_files)  # each was a failure point
    monkeypatch.undo()

    umask = os.umask(0o022)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in target.iterdir()}
    assert runtime_files <= set(modes) and modes == dict.fromkeys(modes, 0o666 & ~umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask
    loaded = load_any(target)
    assert any(isinstance(m, OnlineRotation) for m in loaded.model.modules())

    tensors = load_file(target / RUNTIME_TENSORS)
    name = next(iter(tensors))
    tensors[name].view(-1)[0] = float("inf")
    save_file(tensors, str(target / RUNTIME_TENSORS), {"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"^{name} in {target / RUNTIME_TENSORS} has 1 Inf value;"):
        load_any(target)


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq"])
def test_a_non_finite_weight_is_named_by_the_quantizer(method: str) -> None:
    dlm = random_char_model("llada")
    name = dlm.topology.block(1).names["up"]
    with torch.no_grad():
        dlm.model.get_submodule(name).weight[0, :2] = float("nan")
    with pytest.raises(ValueError, match=rf"^{name}\.weight contains NaN or Inf values \(2 NaN values\)"):
        quantize_model(dlm, small(load_recipe(method), "W4A16g16"), progress=False)


def test_runtime_tensors_are_no_weight_shard_and_old_exports_still_load(tmp_path: Path) -> None:
    dlm = random_char_model("dream")
    result = quantize_model(dlm, small(load_recipe("quarot"), "W4A16"), progress=False)
    folder = export_model(result, tmp_path / "q")
    assert [p.name for p in folder.glob("*.safetensors")] == ["model.safetensors"]
    assert (folder / RUNTIME_TENSORS).is_file()
    ids = probe()
    with torch.no_grad():
        new = load_any(folder).logits(ids)
        (folder / RUNTIME_TENSORS).rename(folder / LEGACY_RUNTIME_TENSORS)  # the name exports had before
        assert torch.equal(load_any(folder).logits(ids), new)
    (folder / LEGACY_RUNTIME_TENSORS).unlink()
    with pytest.raises(ValueError, match=rf"names the runtime tensor '.*' that {folder} does not hold"):
        load_any(folder)


def test_export_copies_the_modeling_files_of_the_source_folder(tmp_path: Path) -> None:
    dlm = random_char_model("llada")
    dlm.config.extra["auto_map"] = {"AutoModel": "modeling_llada.LLaDAModelLM"}
    source = tmp_path / "float"
    save(dlm, source)
    (source / "modeling_llada.py").write_text("class LLaDAModelLM: ...\n")
    result = quantize_model(dlm, small(load_recipe("rtn"), "W8A16g16"), progress=False)
    folder = export_model(result, tmp_path / "q", source_model=str(source))
    assert (folder / "modeling_llada.py").read_text() == "class LLaDAModelLM: ...\n"
    assert json.loads((folder / "config.json").read_text())["auto_map"] == dlm.config.extra["auto_map"]


def test_multibinary_recipe_exports_and_reloads(tmp_path) -> None:
    dlm = random_char_model("llada")
    ids = probe()
    result = quantize_model(dlm, small(load_recipe("quant-dllm"), "W2A16g16"), progress=False)
    folder = export_model(result, tmp_path / "q")
    assert not (folder / RUNTIME_FILE).exists()
    with torch.no_grad():
        assert torch.allclose(load_any(folder).logits(ids), dlm.logits(ids), atol=1e-5)


def test_calibration_from_a_saved_set_and_an_exported_list(tmp_path) -> None:
    dlm = random_char_model("llada")
    cset = prepare_calibration(
        CalibrationSpec(builder="random", params={"num_samples": 5, "seq_len": 16}), dlm, seed=3
    )
    assert cset.provenance.seed == 3
    cset.save(tmp_path / "saved")
    records = tmp_path / "states.jsonl"
    records.write_text("\n".join(json.dumps(r) for r in cset.to_calibration_list()))
    for path in (tmp_path / "saved", records):
        again = prepare_calibration(CalibrationSpec(path=str(path), limit=4), dlm, seed=0)
        assert len(again) == 4
        for a, b in zip(again, cset, strict=False):
            assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.is_masked, b.is_masked)
    with pytest.raises(FileNotFoundError, match="neither a saved CalibrationSet"):
        prepare_calibration(CalibrationSpec(path=str(tmp_path / "missing.txt")), dlm, seed=0)


def test_tmas_runs_the_models_sampler_with_overrides() -> None:
    dlm = random_char_model("llada")
    spec = CalibrationSpec(
        builder="tmas",
        params={"num_prompts": 2, "num_samples": 4, "on_short": "redistribute"},
        sampler={"steps": 4, "gen_length": 4, "block_length": 4},
    )
    cset = prepare_calibration(spec, dlm, seed=0)
    assert len(cset) == 4 and cset.has_confidence
    assert all(0 <= s.step < 4 for s in cset)
    with pytest.raises(ValueError, match="max_new_tokens"):
        prepare_calibration(spec, random_char_model("dream"), seed=0)


def test_an_activation_scheme_quantizes_activations_even_without_an_act_quant_step() -> None:
    dlm = random_char_model("llada")
    result = quantize_model(dlm, small(load_recipe("gptq"), "W8A8g16"), progress=False)
    wrapped = [dlm.model.get_submodule(n) for n in dlm.topology.linear_names()]
    v_names = {b.names["v"] for b in dlm.topology}
    wrapped = [
        m.inner if n in v_names else m for n, m in zip(dlm.topology.linear_names(), wrapped, strict=True)
    ]
    assert all(isinstance(m, ActQuantLinear) and m.config.bits == 8 for m in wrapped)
    assert all(isinstance(m.inner, QuantLinear) for m in wrapped)
    assert sum(r.method == "act_quant(a8)" for r in result.rows) == 14
    # ... and the attention sites too (the implied attn_quant step): the q/k site and V of each block
    assert sum(r.method == "attn_quant(q/k/v a8)" for r in result.rows) == 2 * len(dlm.topology)
    assert quantized_sites(dlm)["k"] == "int8 sym per-token-head"


def test_recipes_without_statistics_never_touch_calibration() -> None:
    recipe = small(load_recipe("rtn"), "W4A16g16", calibration={"path": "/nonexistent/states.jsonl"})
    result = quantize_model(random_char_model("dream"), recipe, progress=False)
    assert result.calibration is None and len(result.rows) == 14


def test_shape_and_ignore_errors_name_the_layer() -> None:
    dlm = random_char_model("llada")
    with pytest.raises(ValueError, match="does not divide the input width 32"):
        quantize_model(dlm, small(load_recipe("rtn"), "W4A16g128"), progress=False)
    with pytest.raises(ValueError, match="not a module of this llada model"):
        ignored_linears(small(load_recipe("rtn"), "W4A16g16", ignore=["model.layers.0.mlp.up_proj"]), dlm)
    named = small(load_recipe("rtn"), "W4A16g16", ignore=["head", dlm.topology.block(0).names["q"]])
    assert ignored_linears(named, dlm) == {dlm.topology.block(0).names["q"]}
