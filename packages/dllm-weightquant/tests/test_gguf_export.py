"""GGUF export of the tiny models: llama.cpp metadata and names, every tensor read back with gguf's own
dequantization equals dllmq's weights bit for bit, and the read-back model gives the same logits."""

from __future__ import annotations

from pathlib import Path

import dllm_sampler
import numpy as np
import pytest
import torch
from dllm_weightquant.gguf import quantize_for_gguf, read_gguf, read_gguf_tensors, write_gguf
from dllm_weightquant.qlinear import QuantLinear

gguf = pytest.importorskip("gguf")


def _field(reader, key: str):
    field = reader.get_field(key)
    return field.contents() if field is not None else None


@pytest.mark.parametrize(
    ("model", "gguf_type", "arch"), [("tiny-llada", "Q8_0", "llada"), ("tiny-dream", "Q4_K", "dream")]
)
def test_export_reads_back_bit_for_bit(tmp_path: Path, model: str, gguf_type: str, arch: str) -> None:
    dlm = dllm_sampler.load(model, dtype=torch.float32)
    quantize_for_gguf(dlm, gguf_type)
    path = write_gguf(dlm, tmp_path / "m.gguf", float_type="f32")
    _hf, state, reader = read_gguf_tensors(path)
    assert _field(reader, "general.architecture") == arch
    assert _field(reader, f"{arch}.attention.causal") is False
    assert _field(reader, "diffusion.shift_logits") is (arch == "dream")
    assert _field(reader, "tokenizer.ggml.mask_token_id") == dlm.mask_token_id
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    assert _field(reader, "tokenizer.ggml.pre") == "starcoder"
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == gguf_type and types["blk.0.attn_norm.weight"] == "F32"
    ours = dlm.model.state_dict()
    for name, module in dlm.model.named_modules():
        if isinstance(module, QuantLinear):
            ours[f"{name}.weight"] = module.weight
    for key, value in state.items():
        a, b = value.numpy(), ours[key].float().numpy()
        assert a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32)), key
    back = read_gguf(path)
    ids = torch.randint(4, dlm.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(back.logits(ids), dlm.logits(ids))


def test_llada_q_rows_are_permuted_as_the_converter_does(tmp_path: Path) -> None:
    dlm = dllm_sampler.load("tiny-llada", dtype=torch.float32)
    path = write_gguf(dlm, tmp_path / "f.gguf", float_type="f32")
    reader = gguf.GGUFReader(str(path))
    stored = {t.name: np.array(t.data) for t in reader.tensors}["blk.0.attn_q.weight"]
    q = dlm.model.get_submodule(dlm.topology.block(0).names["q"]).weight.numpy()
    heads = dlm.config.dims().num_heads
    expected = q.reshape(heads, 2, q.shape[0] // heads // 2, -1).swapaxes(1, 2).reshape(q.shape)
    assert np.array_equal(stored, expected) and not np.array_equal(stored, q)


def test_refuses_other_grids(tmp_path: Path) -> None:
    from dllm_kernels import QuantSpec
    from dllm_weightquant import rtn_quantize
    from dllm_weightquant.qlinear import replace_linear

    dlm = dllm_sampler.load("tiny-llada", dtype=torch.float32)
    name = dlm.topology.block(0).names["q"]
    linear = dlm.model.get_submodule(name)
    q = rtn_quantize(linear.weight, None, QuantSpec(bits=4, granularity="group", group_size=32))
    replace_linear(dlm.model, name, QuantLinear.from_linear(linear, q, mode="fake"))
    with pytest.raises(ValueError, match="grid GGUF cannot hold"):
        write_gguf(dlm, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
