"""Export / load of quantized checkpoints: bit-identical weights, compressed-tensors compatibility,
the dllmq format, provenance, atomic writes and clear errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from dllm_kernels import QuantSpec
from dllm_sampler import CheckpointError, DiffusionLM
from dllm_sampler.testing import WriteFaults
from dllm_weightquant import (
    OnlineComputation,
    OnlineHadamard,
    QuantLinear,
    QuantProvenance,
    compressed_tensors_config,
    daq_quantize,
    export_quantized,
    gptq_quantize,
    load_quantized,
    read_provenance,
    replace_linear,
    rtn_quantize,
)
from dllm_weightquant.checkpoint.export import remote_code_files
from dllm_weightquant.checkpoint.qconfig import ModuleFormat
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

Quantizer = Callable[[str, torch.Tensor, torch.Tensor], object]
pytestmark = pytest.mark.filterwarnings("ignore:.*has no tokenizer.json")


def quantize_model(dlm: DiffusionLM, quantizer: Quantizer, mode: str = "kernel") -> dict[str, torch.Tensor]:
    """Replace every block linear with a QuantLinear; returns name -> dequantized weight."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for name in dlm.topology.linear_names():
        lin = dlm.model.get_submodule(name)
        x = torch.randn(256, lin.in_features, generator=g, dtype=torch.float64)
        q = quantizer(name, lin.weight.detach(), x.T @ x / 256)
        out[name] = q.dequantize()  # type: ignore[attr-defined]
        chosen = mode if not hasattr(q, "planes") else "fake"
        replace_linear(dlm.model, name, QuantLinear.from_linear(lin, q, mode=chosen))  # type: ignore[arg-type]
    return out


def _with_tokenizer(dlm: DiffusionLM) -> DiffusionLM:
    dlm.tokenizer = Tokenizer(WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    dlm.tokenizer_files = {"tokenizer_config.json": {"model_max_length": 256}}
    return dlm


def _loaded_weights(dlm: DiffusionLM) -> dict[str, torch.Tensor]:
    return {n: m.qweight.dequantize() for n, m in dlm.model.named_modules() if isinstance(m, QuantLinear)}


SPECS = [
    QuantSpec(4, True, "group", 16),
    QuantSpec(3, False, "group", 16),
    QuantSpec(2, False, "channel"),
    QuantSpec(8, True, "channel"),
    QuantSpec(4, True, "tensor"),
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_export_load_is_bit_identical(tmp_path: Path, tiny_dlm: Callable, spec: QuantSpec, arch: str) -> None:
    dlm = _with_tokenizer(tiny_dlm(arch))
    weights = quantize_model(dlm, lambda n, w, h: gptq_quantize(w, h, spec))
    ids = torch.randint(0, dlm.vocab_size - 4, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = dlm.logits(ids)
    export_quantized(dlm, tmp_path / "q", QuantProvenance(recipe=[{"method": "gptq"}], seeds={"torch": 0}))
    loaded = load_quantized(tmp_path / "q")
    got = _loaded_weights(loaded)
    assert got.keys() == weights.keys()
    for name, w in weights.items():
        assert torch.equal(got[name], w), name
    with torch.no_grad():
        assert torch.equal(loaded.logits(ids), logits)
    for name, t in dlm.model.state_dict().items():  # the float tensors are unchanged
        if not any(name.startswith(q + ".") for q in weights) or name.endswith(".bias"):
            assert torch.equal(loaded.model.state_dict()[name], t), name
    assert loaded.tokenizer is not None and loaded.tokenizer_files == dlm.tokenizer_files


def test_compressed_tensors_decompressor_reproduces_our_weights(tmp_path: Path, tiny_dlm: Callable) -> None:
    ct = pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationConfig

    dlm = tiny_dlm("llada")
    specs = {n: SPECS[i % 4] for i, n in enumerate(dlm.topology.linear_names())}  # several config groups
    weights = quantize_model(dlm, lambda n, w, h: gptq_quantize(w, h, specs[n]))
    export_quantized(dlm, tmp_path / "q")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    qc = config["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    assert qc["version"] == ct.__version__
    assert qc["ignore"] == [dlm.topology.head_name]
    parsed = QuantizationConfig.model_validate(qc)
    state = load_file(str(tmp_path / "q" / "model.safetensors"))
    for name, want in weights.items():
        scheme = next(s for s in parsed.config_groups.values() if name in s.targets)
        local = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
        assert set(local) <= {"weight_packed", "weight_scale", "weight_shape", "weight_zero_point"}
        assert local["weight_packed"].dtype == torch.int32 and local["weight_shape"].dtype == torch.int64
        out = PackedQuantizationCompressor.decompress(local, scheme)
        assert torch.equal(out["weight"], want), name
        # and the library packs the same codes into the same bits
        qw = dlm.model.get_submodule(name).qweight
        ours = {"weight": out["weight"], "weight_scale": qw.scale}
        if qw.zero is not None:
            ours["weight_zero_point"] = (qw.zero - (1 << (qw.spec.bits - 1))).to(torch.int8)
        again = PackedQuantizationCompressor.compress(ours, scheme)
        for key in ("weight_packed", "weight_zero_point"):
            if key in local:
                assert torch.equal(again[key], local[key]), (name, key)


def test_single_spec_targets_linear_and_lists_the_head(tmp_path: Path, tiny_dlm: Callable) -> None:
    dlm = tiny_dlm("llada")
    quantize_model(dlm, lambda n, w, h: rtn_quantize(w, None, QuantSpec(4, True, "group", 16)))
    export_quantized(dlm, tmp_path / "q")
    qc = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert list(qc["config_groups"]) == ["group_0"]
    assert qc["config_groups"]["group_0"]["targets"] == ["Linear"]
    assert qc["ignore"] == ["model.transformer.ff_out"]  # the LM head, not the blocks' ff_out


@pytest.mark.parametrize("sym", [True, False])
def test_hand_written_config_equals_the_library_one(sym: bool) -> None:
    pytest.importorskip("compressed_tensors")
    formats = {
        "a.q": ModuleFormat("uniform", spec=QuantSpec(4, sym, "group", 128)),
        "a.k": ModuleFormat("uniform", spec=QuantSpec(4, sym, "group", 128)),
        "a.o": ModuleFormat("uniform", spec=QuantSpec(8, True, "channel")),
        "a.v": ModuleFormat("uniform", spec=QuantSpec(3, sym, "group", 64), g_idx=True),
    }
    for chosen in (formats, {"a.q": formats["a.q"]}):
        lib = compressed_tensors_config(chosen, ["lm_head"], use_library=True)
        hand = compressed_tensors_config(chosen, ["lm_head"], use_library=False)
        lib.pop("version")
        hand.pop("version")
        assert json.loads(json.dumps(lib)) == json.loads(json.dumps(hand))


def test_hand_written_config_with_online_computation_equals_the_library_one() -> None:
    pytest.importorskip("compressed_tensors")
    w4 = QuantSpec(4, False, "group", 64)
    formats = {
        "a.q": ModuleFormat("uniform", spec=w4, layout="int-quantized"),
        "a.o": ModuleFormat("uniform", spec=w4),
        "a.down": ModuleFormat("uniform", spec=QuantSpec(8, True, "channel"), layout="int-quantized"),
    }
    online = OnlineComputation(
        {
            "a.q": QuantSpec(8, True, "token"),
            "a.down": QuantSpec(4, False, "token"),
            "a.v": QuantSpec(8, True, "token"),
        },
        (
            OnlineHadamard("a.down", "input"),
            OnlineHadamard("a.v", "output", 16),
            OnlineHadamard("a.o", "input"),
            OnlineHadamard("a", "q_attn", 16),
            OnlineHadamard("a", "k_cache", 16),
        ),
    )
    lib = compressed_tensors_config(formats, ["a.v", "head"], use_library=True, online=online)
    hand = compressed_tensors_config(formats, ["a.v", "head"], use_library=False, online=online)
    lib.pop("version")
    hand.pop("version")
    assert json.loads(json.dumps(lib)) == json.loads(json.dumps(hand))
    assert hand["format"] == "mixed-precision" and hand["ignore"] == ["head"]  # a.v has an input quantizer
    groups = {tuple(g["targets"]): g for g in hand["config_groups"].values()}
    assert groups[("a.v",)]["weights"] is None and groups[("a.v",)]["format"] == "dense"
    assert groups[("a.q",)]["format"] == "int-quantized" and groups[("a.o",)]["input_activations"] is None
    assert groups[("a.down",)]["input_activations"]["symmetric"] is False
    transforms = hand["transform_config"]["config_groups"]
    assert transforms["online_hadamard"]["apply"] == [
        {"targets": ["a.down", "a.o"], "location": "input", "inverse": False, "ignore": []}
    ]
    assert [a["location"] for a in transforms["online_hadamard_head16"]["apply"]] == [
        "k_cache",
        "output",
        "q_attn",
    ]
    from compressed_tensors.quantization import QuantizationConfig
    from compressed_tensors.transform import TransformConfig

    QuantizationConfig.model_validate(hand)
    TransformConfig.model_validate(hand["transform_config"])
    with pytest.raises(ValueError, match="cannot express"):
        compressed_tensors_config(formats, [], online=OnlineComputation(inexpressible=("V quantizers",)))


@pytest.mark.parametrize("sym", [True, False])
def test_activation_quantized_linears_use_the_int_quantized_layout(
    tmp_path: Path, tiny_dlm: Callable, sym: bool
) -> None:
    dlm = tiny_dlm("llada")
    weights = quantize_model(dlm, lambda n, w, h: rtn_quantize(w, None, QuantSpec(4, sym, "group", 16)))
    names = dlm.topology.linear_names()
    online = OnlineComputation({n: QuantSpec(8, sym, "token") for n in names[:3]})
    export_quantized(dlm, tmp_path / "q", online=online)
    qc = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert qc["format"] == "mixed-precision" and qc["quant_method"] == "compressed-tensors"
    state = load_file(str(tmp_path / "q" / "model.safetensors"))
    assert state[f"{names[0]}.weight"].dtype == torch.int8 and f"{names[3]}.weight_packed" in state
    with pytest.raises(ValueError, match="declares computation that runs online"):
        load_quantized(tmp_path / "q")
    got = _loaded_weights(load_quantized(tmp_path / "q", with_online=True))
    assert all(torch.equal(got[n], w) for n, w in weights.items())

    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.naive_quantized.base import IntQuantizationCompressor
    from compressed_tensors.quantization import QuantizationConfig

    scheme = next(
        s for s in QuantizationConfig.model_validate(qc).config_groups.values() if names[0] in s.targets
    )
    local = {k[len(names[0]) + 1 :]: v for k, v in state.items() if k.startswith(names[0] + ".")}
    assert torch.equal(IntQuantizationCompressor.decompress(local, scheme)["weight"], weights[names[0]])


def test_inexpressible_online_computation_makes_a_dllmq_checkpoint(
    tmp_path: Path, tiny_dlm: Callable
) -> None:
    dlm = tiny_dlm("dream")
    weights = quantize_model(dlm, lambda n, w, h: rtn_quantize(w, None, QuantSpec(4, True, "group", 16)))
    online = OnlineComputation({"x": QuantSpec(8, True, "token")}, inexpressible=("V quantizers",))
    export_quantized(dlm, tmp_path / "q", online=online)
    qc = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "dllmq" and qc["unsupported_by_compressed_tensors"] == ["V quantizers"]
    assert qc["online"] == ["dynamic per-token input quantizers on 1 linears", "V quantizers"]
    with pytest.raises(ValueError, match=r"runs online besides the weights \(dynamic per-token"):
        load_quantized(tmp_path / "q")
    got = _loaded_weights(load_quantized(tmp_path / "q", with_online=True))
    assert all(torch.equal(got[n], w) for n, w in weights.items())


def test_modeling_files_named_by_auto_map_are_copied(tmp_path: Path, tiny_dlm: Callable) -> None:
    dlm = tiny_dlm("llada")
    quantize_model(dlm, lambda n, w, h: rtn_quantize(w, None, QuantSpec(4)))
    dlm.config.extra["auto_map"] = {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModel": "modeling_llada.LLaDAModelLM",
        "AutoTokenizer": ["tokenization_x.Slow", None],
        "AutoModelForCausalLM": "org/other--modeling_other.Model",
    }
    source = tmp_path / "src"
    source.mkdir()
    (source / "configuration_llada.py").write_text("class LLaDAConfig: ...\n")
    (source / "modeling_llada.py").write_text(
        "from .configuration_llada import LLaDAConfig\nfrom .utils import x\n"
    )
    (source / "utils.py").write_text("x = 1\n")
    (source / "unrelated.py").write_text("")
    files, missing = remote_code_files(dlm.config.to_dict(), source)
    assert [f.name for f in files] == ["configuration_llada.py", "modeling_llada.py", "utils.py"]
    assert missing == ["tokenization_x"]
    with pytest.warns(UserWarning, match=r"auto_map names \['tokenization_x.py'\]"):
        out = export_quantized(dlm, tmp_path / "q", source_folder=source)
    for name in ("configuration_llada.py", "modeling_llada.py", "utils.py"):
        assert (out / name).read_bytes() == (source / name).read_bytes()
    assert not (out / "unrelated.py").exists()


def test_multibinary_and_mixed_checkpoints(tmp_path: Path, tiny_dlm: Callable) -> None:
    dlm = tiny_dlm("dream")
    names = dlm.topology.linear_names()

    def quantizer(name: str, w: torch.Tensor, h: torch.Tensor) -> object:
        if name.endswith("o_proj"):
            return rtn_quantize(w, None, QuantSpec(4, False, "group", 16))
        return daq_quantize(w, h, QuantSpec(2, True, "group", 16))

    weights = quantize_model(dlm, quantizer)
    ids = torch.randint(0, dlm.vocab_size - 4, (1, 10))
    with torch.no_grad():
        logits = dlm.logits(ids)
    export_quantized(dlm, tmp_path / "q")
    qc = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "dllmq" and set(qc["modules"]) == set(names)
    assert qc["unsupported_by_compressed_tensors"] == ["multi-binary (DAQ/ABMP) weights"]
    assert "online" not in qc
    loaded = load_quantized(tmp_path / "q")
    got = _loaded_weights(loaded)
    for name, w in weights.items():
        assert torch.equal(got[name], w), name
    assert loaded.model.get_submodule(names[0]).mode == "fake"
    assert loaded.model.get_submodule(dlm.topology.block(0).names["o"]).mode == "kernel"
    with torch.no_grad():
        assert torch.allclose(loaded.logits(ids), logits, atol=1e-5)
    assert isinstance(load_quantized(tmp_path / "q", mode="fake").model.get_submodule(names[3]), QuantLinear)


def test_provenance_and_files(tmp_path: Path, tiny_dlm: Callable) -> None:
    dlm = _with_tokenizer(tiny_dlm("llada"))
    quantize_model(dlm, lambda n, w, h: rtn_quantize(w, None, QuantSpec(4)))
    prov = QuantProvenance(
        recipe=[{"method": "rtn", "config": {}}],
        seeds={"calibration": 3},
        calibration={"builder": "mcs", "n": 8},
    )
    out = export_quantized(dlm, tmp_path / "q", prov)
    assert {p.name for p in out.iterdir()} == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "dllmq_provenance.json",
    }
    data = read_provenance(out)
    assert data["recipe"] == prov.recipe and data["seeds"] == {"calibration": 3}
    assert data["calibration"]["builder"] == "mcs"
    assert data["packages"]["dllm-weightquant"] and data["packages"]["torch"]


def test_sharded_export(tmp_path: Path, tiny_dlm: Callable) -> None:
    dlm = tiny_dlm("llada")
    weights = quantize_model(dlm, lambda n, w, h: rtn_quantize(w, None, QuantSpec(4)))
    export_quantized(dlm, tmp_path / "q", max_shard_bytes=4096)
    assert (tmp_path / "q" / "model.safetensors.index.json").is_file()
    got = _loaded_weights(load_quantized(tmp_path / "q"))
    assert all(torch.equal(got[n], w) for n, w in weights.items())


def test_writes_are_atomic(tmp_path: Path, tiny_dlm: Callable, monkeypatch: pytest.MonkeyPatch) -> None:
    dlm = tiny_dlm("llada")
    quantize_model(dlm, lambda n, w, h: rtn_quantize(w, None, QuantSpec(4)))
    target = tmp_path / "q"
    export_quantized(dlm, target)
    before = (target / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_quantized(dlm, target)

    import dllm_weightquant.checkpoint.export as export_module

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "write_weights", broken)
    with pytest.raises(OSError, match="disk full"):
        export_quantized(dlm, target, overwrite=True)
    assert (target / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]  # no temporary folder left behind
    monkeypatch.undo()
    export_quantized(dlm, target, overwrite=True)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_failure_at_any_write_of_an_export_keeps_the_previous_checkpoint(
    tmp_path: Path, tiny_dlm: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dllm_sampler.io as sampler_io

    old = tiny_dlm("llada")
    quantize_model(old, lambda n, w, h: rtn_quantize(w, None, QuantSpec(8)))
    target = export_quantized(old, tmp_path / "q")
    before = _files(target)
    dlm = _with_tokenizer(tiny_dlm("dream"))
    weights = quantize_model(dlm, lambda n, w, h: rtn_quantize(w, None, QuantSpec(4)))
    faults = WriteFaults(monkeypatch, [sampler_io])
    faults.wrap_tokenizer(dlm)

    def extra(folder: Path) -> None:
        faults.tick("extra hook")
        (folder / "extra.json").write_text("{}\n")

    def unchanged(failed: str) -> None:
        assert _files(target) == before, f"the old checkpoint changed after a failure at {failed}"
        assert [p.name for p in tmp_path.iterdir()] == ["q"], f"leftovers after a failure at {failed}"

    writes = faults.run_each(
        lambda: export_quantized(dlm, target, overwrite=True, max_shard_bytes=8192, extra=extra), unchanged
    )
    assert writes >= 10
    monkeypatch.undo()
    assert (target / "extra.json").read_text() == "{}\n" and (
        target / "model.safetensors.index.json"
    ).is_file()
    got = _loaded_weights(load_quantized(target))
    assert all(torch.equal(got[n], w) for n, w in weights.items())


def test_nan_in_a_quantized_checkpoint_fails_the_load_naming_the_tensor(
    tmp_path: Path, tiny_dlm: Callable
) -> None:
    dlm = tiny_dlm("llada")
    quantize_model(dlm, lambda n, w, h: rtn_quantize(w, None, QuantSpec(4, True, "group", 16)))
    file = export_quantized(dlm, tmp_path / "q") / "model.safetensors"
    state = load_file(file)
    pristine = {n: t.clone() for n, t in state.items()}
    norm = next(n for n in state if "norm" in n)
    scale = next(n for n in state if n.endswith("weight_scale"))
    for name, count in ((norm, 3), (scale, 1)):
        state = {n: t.clone() for n, t in pristine.items()}
        state[name].view(-1)[:count] = float("nan")
        save_file(state, str(file), {"format": "pt"})
        with pytest.raises(
            CheckpointError, match=rf"^{name} in {file} has {count} NaN values?; the checkpoint is"
        ):
            load_quantized(tmp_path / "q")


def test_clear_errors(tmp_path: Path, tiny_dlm: Callable) -> None:
    dlm = tiny_dlm("llada")
    with pytest.raises(ValueError, match="no QuantLinear"):
        export_quantized(dlm, tmp_path / "x")
    quantize_model(dlm, lambda n, w, h: rtn_quantize(w, None, QuantSpec(4, False, "tensor")))
    with pytest.raises(ValueError, match="asymmetric per-tensor"):
        export_quantized(dlm, tmp_path / "y")
    assert not (tmp_path / "y").exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps(dlm.config.to_dict()))
    with pytest.raises(ValueError, match="not a quantized checkpoint"):
        load_quantized(plain)
    with pytest.raises(ValueError, match="mode"):
        load_quantized(plain, mode="int4")


def test_config_without_compressed_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    formats = {"a.q": ModuleFormat("uniform", spec=QuantSpec(4, True, "group", 128))}
    monkeypatch.setitem(sys.modules, "compressed_tensors", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install compressed-tensors"):
        compressed_tensors_config(formats, [], use_library=True)
    fallback = compressed_tensors_config(formats, ["lm_head"])
    assert fallback["quant_method"] == "compressed-tensors" and fallback["ignore"] == ["lm_head"]
    assert fallback["config_groups"]["group_0"]["weights"]["num_bits"] == 4
