"""Write a LLaDA / Dream model as a GGUF file for llama.cpp's diffusion runtime (``llama-diffusion-cli``).

What ``convert_hf_to_gguf.py`` writes for the same float model (its ``LLaDAModel`` / ``DreamModel``):

* architecture ``llada`` or ``dream``; context length, embedding and feed-forward length, block count,
  head counts, RoPE base, RMS-norm epsilon; for LLaDA also the vocabulary size and RoPE dimension count;
  ``attention.causal = false``; ``diffusion.shift_logits`` (false for LLaDA; true for Dream, whose logits
  are read one position to the left: written explicitly);
* the tokenizer as ``gpt2`` (byte-level BPE) with tokens, token types (special added tokens are CONTROL,
  missing ids ``[PAD<i>]`` UNUSED), merges and special token ids, the mask token's included (gguf's
  ``SpecialVocab``); the
  pre-tokenizer ``starcoder`` when the Hugging Face one splits digits one by one before GPT-2's byte-level
  regex (the tiny models), else ``default``; LLaDA adds BOS;
* tensors under llama.cpp's names, LLaDA's q/k rows permuted (`names.permute_rows`).

Quantized Linears holding a ``GGUFWeight`` are written as their blocks, byte for byte. Other tensors:
1-D (norms, biases) F32 as llama.cpp keeps them; 2-D (embedding, head, linears left unquantized) in
``float_type`` (``"f16"``, the converter's default, or ``"f32"``). dllmq's own keys (``dllmq.*``, and
``tokenizer.huggingface.json``) let `read_gguf` rebuild the model; llama.cpp ignores them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from dllm_kernels import GGUFSpec, gguf_grid
from dllm_sampler import DiffusionLM
from dllm_sampler.atomic import atomic_path
from torch import Tensor, nn

from dllm_weightquant.gguf._lib import import_gguf
from dllm_weightquant.gguf.names import arch_of, gguf_name, permute_rows
from dllm_weightquant.gguf.quantize import gguf_rtn, gguf_spec_for
from dllm_weightquant.gguf.weight import GGUFWeight
from dllm_weightquant.qlinear import QuantLinear, replace_linear

__all__ = ["FLOAT_TYPES", "HF_CONFIG_KEY", "NAMES_KEY", "quantize_for_gguf", "write_gguf"]

FLOAT_TYPES = ("f16", "f32")
HF_CONFIG_KEY = "dllmq.hf_config"
NAMES_KEY = "dllmq.tensor_names"
GENERATION_KEY = "dllmq.tokenizer_files"
SOURCE_KEY = "dllmq.source_model"
_FILE_TYPE = {"Q8_0": "MOSTLY_Q8_0", "Q4_0": "MOSTLY_Q4_0", "Q4_K": "MOSTLY_Q4_K_S"}


def quantize_for_gguf(dlm: DiffusionLM, gguf_type: str) -> DiffusionLM:
    """Round every block linear of ``dlm`` (float, or quantized on another grid: its dequantized weight) to
    ``gguf_type`` with RTN, in place; linears already on a GGUF grid are kept. Returns ``dlm``."""
    spec = GGUFSpec.of(gguf_type)
    model = dlm.model
    for name in dlm.topology.weight_holders().values():
        layer = model.get_submodule(name)
        if isinstance(layer, QuantLinear) and layer.layout()["kind"] == "gguf":
            continue
        weight = layer.qweight.dequantize() if isinstance(layer, QuantLinear) else layer.weight.detach()
        if gguf_grid.fallback_type(gguf_type, weight.shape[1]) == "F16":
            continue  # written as a float tensor (write_gguf says so)
        quantized = gguf_rtn(weight, gguf_spec_for(spec, weight.shape[1]), f"{name}.weight")
        linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        linear = linear.to(device=weight.device, dtype=weight.dtype)
        if layer.bias is not None:
            linear.bias.data.copy_(layer.bias.detach())
        replace_linear(model, name, QuantLinear.from_linear(linear, quantized, mode="fake"))
    return dlm


def _tensors(dlm: DiffusionLM) -> dict[str, Tensor | GGUFWeight]:
    """Hugging Face name -> float tensor or ``GGUFWeight``; refuses run-time wrappers and other grids."""
    model = dlm.model
    tensors: dict[str, Tensor | GGUFWeight] = {}
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    for name, module in quantized.items():
        if module.layout()["kind"] != "gguf":
            raise ValueError(
                f"{name} is quantized on a {module.layout()['kind']} grid GGUF cannot hold; quantize with "
                "--format gguf, or export with dllmq export --format gguf (RTN on the dequantized weights)"
            )
        tensors[f"{name}.weight"] = module.qweight
        if module.bias is not None:
            tensors[f"{name}.bias"] = module.bias.detach()
    for key, value in model.state_dict().items():
        owner = key.rpartition(".")[0]
        if owner in quantized:
            continue
        if ".inner." in key or owner.endswith(".inner"):
            raise ValueError(
                f"{key}: the model runs online computation (activation quantizers, online rotations or V "
                "quantizers) that GGUF cannot express; export a weight-only (A16) recipe without online "
                "rotations"
            )
        tensors[key] = value.detach()
    head = dlm.topology.head_name
    if head is None:
        tensors.pop(f"{dlm.spec.names.head}.weight", None)
    return tensors


def _tokenizer_pre(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's pre-tokenizer name for a Hugging Face byte-level BPE tokenizer."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    kinds = [(s.get("type"), s.get("individual_digits")) for s in steps]
    if kinds == [("Digits", True), ("ByteLevel", None)]:
        return "starcoder"
    return "default"


def _add_vocab(writer: Any, gguf: Any, dlm: DiffusionLM, arch: str, folder: Path) -> None:
    """Tokenizer metadata as ``convert_hf_to_gguf.py``'s ``_set_vocab_gpt2`` writes it."""
    if dlm.tokenizer is None:
        raise ValueError("the model has no tokenizer; a GGUF for llama.cpp needs one (tokenizer.json)")
    text = dlm.tokenizer.to_str()
    tokenizer_json = json.loads(text)
    if (tokenizer_json.get("model") or {}).get("type") != "BPE":
        raise ValueError("GGUF export supports byte-level BPE tokenizers (tokenizer.json model type BPE)")
    vocab = dlm.tokenizer.get_vocab(with_added_tokens=True)
    special = {t["id"] for t in tokenizer_json.get("added_tokens", []) if t.get("special")}
    added = {t["id"] for t in tokenizer_json.get("added_tokens", [])}
    by_id = {i: tok for tok, i in vocab.items()}
    tokens, types = [], []
    for i in range(dlm.vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            kind = gguf.TokenType.NORMAL
            if i in added:
                kind = gguf.TokenType.CONTROL if i in special else gguf.TokenType.USER_DEFINED
            types.append(kind)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_tokenizer_pre(tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    (folder / "tokenizer.json").write_text(text, encoding="utf-8")
    special_vocab = gguf.SpecialVocab(folder, load_merges=True, n_vocab=len(tokens))
    special_vocab.special_token_ids["mask"] = dlm.mask_token_id
    special_vocab.add_to_gguf(writer, quiet=True)
    if arch == "llada":
        writer.add_add_bos_token(True)
    writer.add_string(gguf.Keys.Tokenizer.HF_JSON, text)


def _add_hparams(writer: Any, dlm: DiffusionLM, arch: str) -> None:
    """The hyperparameters ``TextModel.set_gguf_parameters`` and the LLaDA / Dream classes write."""
    dims = dlm.config.dims()
    writer.add_context_length(dlm.max_positions)
    writer.add_embedding_length(dims.hidden_size)
    writer.add_feed_forward_length(dims.intermediate_size)
    writer.add_block_count(dims.num_layers)
    writer.add_head_count(dims.num_heads)
    writer.add_head_count_kv(dims.num_kv_heads)
    writer.add_rope_freq_base(float(dims.rope_theta))
    writer.add_layer_norm_rms_eps(float(dims.rms_norm_eps))
    if arch == "llada":
        writer.add_vocab_size(dlm.vocab_size)
        writer.add_rope_dimension_count(dims.head_dim)
    writer.add_causal_attention(False)
    writer.add_diffusion_shift_logits(dlm.logit_shift != 0)


def write_gguf(
    dlm: DiffusionLM,
    path: str | Path,
    *,
    gguf_type: str | None = None,
    float_type: str = "f16",
    name: str = "",
    source_model: str = "",
) -> Path:
    """Write ``dlm`` to the GGUF file ``path`` (temporary name, then one rename); returns the path.

    ``gguf_type`` names the file type recorded in ``general.file_type`` (the type of its quantized Linears;
    None: taken from them, F16/F32 for a float model); ``source_model`` (the float model's shipped name or
    folder) is recorded for ``dllmq eval``'s default reference. Raises ``ValueError`` for what GGUF cannot
    hold (online computation, non-GGUF grids, an architecture other than LLaDA / Dream).
    """
    if float_type not in FLOAT_TYPES:
        raise ValueError(f"float_type must be one of {FLOAT_TYPES}, got {float_type!r}")
    gguf = import_gguf()
    hf = dlm.config.to_dict()
    arch = arch_of(hf)
    n_layers = dlm.config.dims().num_layers
    tensors = _tensors(dlm)
    types = {t.gguf_type for t in tensors.values() if isinstance(t, GGUFWeight)}
    gguf_type = gguf_type or (sorted(types)[0] if types else None)
    path = Path(path).expanduser()
    names: dict[str, str] = {}
    with atomic_path(path) as tmp, tempfile.TemporaryDirectory() as scratch:
        writer = gguf.GGUFWriter(str(tmp), arch)
        writer.add_name(name or path.stem)
        _add_hparams(writer, dlm, arch)
        file_type = (
            _FILE_TYPE[gguf_type] if gguf_type else ("ALL_F32" if float_type == "f32" else "MOSTLY_F16")
        )
        writer.add_file_type(getattr(gguf.LlamaFileType, file_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        (Path(scratch) / "config.json").write_text(json.dumps(hf), encoding="utf-8")
        for file, content in dlm.tokenizer_files.items():
            (Path(scratch) / file).write_text(json.dumps(content), encoding="utf-8")
        _add_vocab(writer, gguf, dlm, arch, Path(scratch))
        for key, value in tensors.items():
            target = gguf_name(arch, n_layers, key)
            names[target] = key
            if isinstance(value, GGUFWeight):
                data = permute_rows(arch, hf, key, value.data).numpy()
                writer.add_tensor(target, data, raw_dtype=getattr(gguf.GGMLQuantizationType, value.gguf_type))
                continue
            array = permute_rows(arch, hf, key, value.float().cpu()).numpy()
            if array.ndim == 2 and float_type == "f16":
                array = array.astype(np.float16)
            writer.add_tensor(target, np.ascontiguousarray(array))
        writer.add_string(HF_CONFIG_KEY, json.dumps(hf))
        writer.add_string(NAMES_KEY, json.dumps(names))
        writer.add_string(GENERATION_KEY, json.dumps(dlm.tokenizer_files))
        writer.add_string(SOURCE_KEY, source_model)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path
