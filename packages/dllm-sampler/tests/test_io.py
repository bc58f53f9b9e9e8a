"""Checkpoint loading/saving: bit-identical round trips, strict errors, atomic writes, tokenizer files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dllm_sampler.io as dio
import pytest
import torch
from dllm_sampler import CheckpointError, ConfigError, DiffusionLM, available_models, load, save, tiny_config
from dllm_sampler.atomic import HOST, FolderInTheWay
from dllm_sampler.testing import WriteFaults
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers


def make_tokenizer() -> Tokenizer:
    words = ["<unk>", "the", "cat", "sat", "on", "mat", "a", "dog"]
    vocab = {w: i for i, w in enumerate(words)}
    vocab |= {f"<|s{i}|>": i for i in range(len(words), 48)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def make_dlm(arch: str, seed: int = 0, **kw) -> DiffusionLM:
    return DiffusionLM.from_config(tiny_config(arch, **kw), seed=seed, tokenizer=make_tokenizer())


IDS = torch.tensor([[1, 2, 3, 47, 47, 5], [44, 7, 47, 2, 4, 46]])


@pytest.mark.parametrize("arch", ["llada", "dream"])
@pytest.mark.parametrize("max_shard_bytes", [10**9, 20_000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_bit_identical(
    tmp_path: Path, arch: str, max_shard_bytes: int, dtype: torch.dtype
) -> None:
    dlm = make_dlm(arch).to(dtype)
    out = save(dlm, tmp_path / "ckpt", max_shard_bytes=max_shard_bytes)
    files = {p.name for p in out.iterdir()}
    sharded = max_shard_bytes < 10**9
    assert ("model.safetensors.index.json" in files) == sharded
    assert ("model.safetensors" in files) == (not sharded)
    if sharded:
        index = json.loads((out / "model.safetensors.index.json").read_text())
        assert set(index["weight_map"]) == set(dlm.model.state_dict())
        shards = sorted(f for f in files if f.startswith("model-"))
        assert len(shards) > 1 and shards[0].endswith(f"-of-{len(shards):05d}.safetensors")
        sizes = [(out / s).stat().st_size for s in shards]
        assert max(sizes) < 2 * max_shard_bytes
    back = load(out)
    assert back.arch == arch and back.dtype == dtype
    written = back.config.to_dict()
    assert written.pop("torch_dtype") == str(dtype)[len("torch.") :]
    assert written == dlm.config.to_dict()
    for name, t in dlm.model.state_dict().items():
        assert torch.equal(back.model.state_dict()[name], t), name
    assert torch.equal(back.logits(IDS), dlm.logits(IDS))
    assert back.encode("the cat sat") == dlm.encode("the cat sat") == [1, 2, 3]


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_tied_embeddings_round_trip(tmp_path: Path, arch: str) -> None:
    key = {"llada": "weight_tying", "dream": "tie_word_embeddings"}[arch]
    dlm = make_dlm(arch, **{key: True})
    save(dlm, tmp_path / "t")
    stored = load_file(str(tmp_path / "t" / "model.safetensors"))
    assert not any(n in stored for n in ("lm_head.weight", "model.transformer.ff_out.weight"))
    back = load(tmp_path / "t")
    assert torch.equal(back.logits(IDS), dlm.logits(IDS))


def test_tied_checkpoint_with_redundant_head_loads(tmp_path: Path) -> None:
    dlm = make_dlm("dream", tie_word_embeddings=True)
    folder = save(dlm, tmp_path / "t")
    sd = load_file(str(folder / "model.safetensors"))
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"].clone()
    save_file(sd, str(folder / "model.safetensors"))
    assert torch.equal(load(folder).logits(IDS), dlm.logits(IDS))


def test_dtype_argument(tmp_path: Path) -> None:
    folder = save(make_dlm("llada"), tmp_path / "m")
    assert load(folder, dtype="bf16").dtype == torch.bfloat16
    assert load(folder, dtype=torch.float64).dtype == torch.float64
    for bad in (torch.int8, "int4", torch.bool):
        with pytest.raises(ValueError, match="floating dtype"):
            load(folder, dtype=bad)


def test_loaded_model_is_frozen_eval(tmp_path: Path) -> None:
    back = load(save(make_dlm("dream"), tmp_path / "m"))
    assert not back.model.training
    assert not any(p.requires_grad for p in back.model.parameters())


def test_load_runs_no_random_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading builds the model on the meta device and assigns the stored tensors: no parameter is
    materialised or initialised before the weights arrive (so an 8B model needs no 2x memory)."""
    folder = save(make_dlm("llada"), tmp_path / "m")
    calls: list[str] = []
    for fn in ("normal_", "uniform_", "kaiming_uniform_", "ones_", "zeros_"):
        original = getattr(torch.nn.init, fn)

        def spy(tensor: torch.Tensor, *args, _fn=fn, _orig=original, **kwargs):
            calls.append(f"{_fn} on {tensor.device}")
            return _orig(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.nn.init, fn, spy)
    back = load(folder)
    assert [c for c in calls if "meta" not in c] == []
    assert not any(p.is_meta for p in back.model.parameters())
    make_dlm("llada")  # the spies do see a fresh (non-meta) construction
    assert any("cpu" in c for c in calls)


def test_strict_load_lists_every_mismatch(tmp_path: Path) -> None:
    folder = save(make_dlm("llada"), tmp_path / "m")
    sd = load_file(str(folder / "model.safetensors"))
    del sd["model.transformer.blocks.0.q_proj.weight"]
    del sd["model.transformer.ln_f.weight"]
    sd["model.transformer.blocks.1.attn_out.weight"] = torch.zeros(32, 16)
    sd["model.transformer.blocks.0.q_proj.weight_packed"] = torch.zeros(4, 4, dtype=torch.int32)
    sd["model.transformer.blocks.1.ff_norm.weight"] = torch.zeros(32, dtype=torch.int32)
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as info:
        load(folder)
    msg = str(info.value)
    assert "5 problem(s)" in msg
    assert "missing: model.transformer.blocks.0.q_proj.weight (expected shape [32, 32])" in msg
    assert "missing: model.transformer.ln_f.weight" in msg
    assert "unexpected: model.transformer.blocks.0.q_proj.weight_packed" in msg
    assert "wrong shape: model.transformer.blocks.1.attn_out.weight expected [32, 32], found [32, 16]" in msg
    assert "wrong dtype: model.transformer.blocks.1.ff_norm.weight is I32" in msg


def test_arch_mismatch_is_reported_not_partially_loaded(tmp_path: Path) -> None:
    """Dream weights under a LLaDA config: every tensor is reported, nothing is loaded."""
    folder = save(make_dlm("dream"), tmp_path / "m")
    llada_cfg = make_dlm("llada").config.to_dict()
    (folder / "config.json").write_text(json.dumps(llada_cfg))
    with pytest.raises(CheckpointError) as info:
        load(folder)
    msg = str(info.value)
    assert "missing: model.transformer.wte.weight" in msg and "unexpected: lm_head.weight" in msg


def test_sharded_index_problems(tmp_path: Path) -> None:
    folder = save(make_dlm("dream"), tmp_path / "m", max_shard_bytes=20_000)
    index_file = folder / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    index["weight_map"]["model.norm.weight"] = "model-00099-of-00099.safetensors"
    index_file.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"do not exist.*00099"):
        load(folder)
    first = sorted(set(index["weight_map"].values()))[0]
    index["weight_map"]["model.norm.weight"] = first
    index_file.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"index: model\.norm\.weight is listed in"):
        load(folder)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    folder = save(make_dlm("llada"), tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt"):
        load(folder)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=r"neither model\.safetensors"):
        load(folder)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load(folder)
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ConfigError, match=r"config\.json.*Supported architectures"):
        load(folder)


def test_unknown_name_lists_packaged_models() -> None:
    with pytest.raises(FileNotFoundError, match="packaged models"):
        load("no-such-model-xyz")


def test_tokenizer_optional_and_passthrough_files(tmp_path: Path) -> None:
    dlm = DiffusionLM.from_config(tiny_config("dream"), seed=0)
    with pytest.warns(UserWarning, match="no tokenizer.json"):
        back = load(save(dlm, tmp_path / "a"))
    assert back.tokenizer is None
    with pytest.raises(RuntimeError, match="no tokenizer"):
        back.encode("hi")
    dlm.tokenizer = make_tokenizer()
    dlm.tokenizer_files = {
        "tokenizer_config.json": {"bos_token": "<|s44|>", "model_max_length": 256},
        "special_tokens_map.json": {"eos_token": {"content": "<|s46|>"}},
    }
    folder = save(dlm, tmp_path / "b")
    back = load(folder)
    assert back.tokenizer_files == dlm.tokenizer_files
    assert back.decode(back.encode("the dog")) == "the dog"


def test_save_refuses_to_clobber_and_overwrites_atomically(tmp_path: Path) -> None:
    target = tmp_path / "m"
    save(make_dlm("llada", seed=0), target)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save(make_dlm("llada", seed=1), target)
    new = make_dlm("llada", seed=1)
    save(new, target, overwrite=True)
    assert torch.equal(load(target).logits(IDS), new.logits(IDS))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_failed_save_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "m"
    old = make_dlm("dream", seed=0)
    save(old, target)
    calls = {"n": 0}
    real = dio.save_file

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(dio, "save_file", flaky)
    with pytest.raises(OSError, match="disk full"):
        save(make_dlm("dream", seed=1), target, max_shard_bytes=20_000, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        calls["n"] = 0
        save(make_dlm("dream", seed=1), tmp_path / "fresh", max_shard_bytes=20_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert torch.equal(load(target).logits(IDS), old.logits(IDS))


def test_registry_resolves_packaged_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dllm_sampler.registry as registry

    monkeypatch.setattr(registry, "ASSETS_DIR", tmp_path / "assets")
    assert registry.available_models() == {}
    with pytest.raises(FileNotFoundError, match="none installed"):
        load("tiny-llada")
    dlm = make_dlm("llada")
    save(dlm, tmp_path / "assets" / "tiny-llada")
    (tmp_path / "assets" / "not-a-model").mkdir()
    assert list(registry.available_models()) == ["tiny-llada"]
    assert torch.equal(load("tiny-llada").logits(IDS), dlm.logits(IDS))
    with pytest.raises(FileNotFoundError, match="packaged models: tiny-llada"):
        load("tiny-dream")
    with pytest.raises(NotADirectoryError, match=r"config\.json"):
        load(tmp_path / "assets" / "tiny-llada" / "config.json")


@pytest.mark.parametrize("name", sorted(available_models()))
def test_packaged_models_load(name: str) -> None:
    """Every model shipped as package data loads strictly and runs (no-op until the assets exist)."""
    dlm = load(name)
    assert dlm.arch in name and dlm.tokenizer is not None
    ids = torch.tensor([dlm.encode("1+1=")])
    assert dlm.logits(ids).shape == (1, ids.shape[1], dlm.vocab_size)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_folder_has_umask_permissions(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        target = save(make_dlm("llada", seed=0), tmp_path / "m", max_shard_bytes=20_000)
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask
    modes = {f.name: f.stat().st_mode & 0o777 for f in target.iterdir()}
    assert "model.safetensors.index.json" in modes and "tokenizer.json" in modes
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failure_at_any_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "m"
    save(make_dlm("dream", seed=0), target, max_shard_bytes=20_000)
    before = snapshot(target)
    new = make_dlm("dream", seed=1)
    new.tokenizer_files = {"generation_config.json": {"steps": 4}}
    faults = WriteFaults(monkeypatch, [dio])
    faults.wrap_tokenizer(new)
    hit: list[str] = []

    def unchanged(failed: str) -> None:
        hit.append(failed)
        assert snapshot(target) == before, f"the old checkpoint changed after a failure at {failed}"
        assert [p.name for p in tmp_path.iterdir()] == ["m"], f"leftovers after a failure at {failed}"

    writes = faults.run_each(lambda: save(new, target, max_shard_bytes=20_000, overwrite=True), unchanged)
    assert writes == len(hit) >= 10
    assert {h.split()[0] for h in hit} >= {"dllm_sampler.io.save_file", "write_text", "tokenizer.save"}
    assert sum(h.startswith("os.replace") for h in hit) == 2  # old -> backup, staging -> target
    monkeypatch.undo()
    assert torch.equal(load(target).logits(IDS), new.logits(IDS))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_overwrite_replaces_only_checkpoint_folders(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(FolderInTheWay, match=r"not a checkpoint folder \(it has no config.json\)") as err:
        save(make_dlm("llada"), notes, overwrite=True)
    assert isinstance(err.value, ValueError)  # command lines report it as a bad argument
    assert snapshot(notes) == {"todo.txt": b"keep me"}
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        save(make_dlm("llada"), tmp_path / "file", overwrite=True)
    (tmp_path / "empty").mkdir()
    save(make_dlm("llada"), tmp_path / "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "notes"]


def test_leftovers_of_dead_writers_are_cleaned_and_live_ones_kept(tmp_path: Path) -> None:
    save(make_dlm("llada", seed=3), tmp_path / "kept")
    kept = snapshot(tmp_path / "kept")
    save(make_dlm("llada"), tmp_path / "done")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = child.pid
    stale = tmp_path / f".m.tmp-{dead}@{HOST}-0123abcd"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half a model")
    live = tmp_path / f".m.tmp-{os.getpid()}@{HOST}-89abcdef"
    live.mkdir()
    elsewhere = tmp_path / f".m.tmp-{dead}@another-host-0badc0de"
    elsewhere.mkdir()
    legacy = tmp_path / ".m.tmp-k2_x9qz1"
    legacy.mkdir()
    # a dead run's backup whose checkpoint never came back is the only copy: it is moved back
    os.replace(tmp_path / "kept", tmp_path / f".kept.old-{dead}@{HOST}-00c0ffee")
    # a dead run's backup whose checkpoint was replaced is deleted
    replaced = tmp_path / f".done.old-{dead}@{HOST}-0000beef"
    replaced.mkdir()

    with pytest.warns(UserWarning) as record:
        save(make_dlm("llada"), tmp_path / "m")
    messages = "\n".join(str(w.message) for w in record)
    assert f"removed {stale}, a staging folder left by process {dead}" in messages
    assert f"removed {replaced}, a replaced checkpoint" in messages
    assert f"restored {tmp_path / 'kept'}" in messages
    assert f"{legacy} looks like the staging folder of an interrupted export" in messages
    assert len(record) == 4
    assert not stale.exists() and not replaced.exists()
    assert live.exists() and elsewhere.exists() and legacy.exists()
    assert snapshot(tmp_path / "kept") == kept


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_nan_or_inf_in_any_tensor_fails_the_load_naming_it(tmp_path: Path, arch: str) -> None:
    folder = save(make_dlm(arch), tmp_path / "m")
    file = folder / "model.safetensors"
    state = load_file(file)
    norm = next(n for n in state if "norm" in n)
    state[norm][:3] = float("nan")
    save_file(state, file, {"format": "pt"})
    with pytest.raises(
        CheckpointError, match=rf"^{norm} in {file} has 3 NaN values; the checkpoint is corrupt"
    ):
        load(folder)
    state[norm][:3] = 1.0
    state[norm][0] = float("-inf")
    save_file(state, file, {"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"{norm} in {file} has 1 Inf value;"):
        load(folder, dtype=torch.bfloat16)
