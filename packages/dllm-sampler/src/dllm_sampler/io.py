"""Load and save Hugging Face-format checkpoint folders of LLaDA and Dream.

A folder holds ``config.json``, the weights as ``model.safetensors`` or as shards
``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json``, and optionally ``tokenizer.json``
plus ``tokenizer_config.json`` / ``special_tokens_map.json`` / ``generation_config.json`` (passed through).

Loading is strict (every mismatch between the folder and the architecture is reported in one error) and
builds the model on the meta device, so the weights are materialised once, directly from the files.
Saving stages the folder beside the target and renames it into place (`dllm_sampler.atomic`). Every
floating tensor read must be finite (`check_finite`): a NaN or Inf in a checkpoint is reported at load
time with the tensor and file named, not as NaN logits later.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer
from torch import Tensor

from dllm_sampler.adapter import DiffusionLM
from dllm_sampler.atomic import atomic_folder
from dllm_sampler.config import ConfigError, DreamConfig, LLaDAConfig, config_from_dict
from dllm_sampler.models.spec import spec_for_config
from dllm_sampler.registry import resolve

__all__ = [
    "DEFAULT_MAX_SHARD_BYTES",
    "CheckpointError",
    "atomic_folder",
    "check_finite",
    "describe_nonfinite",
    "load",
    "save",
    "write_weights",
]

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"
PASSTHROUGH_FILES = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9

_DTYPE_NAMES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
    "fp64": torch.float64,
    "double": torch.float64,
}
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}


class CheckpointError(ValueError):
    """A checkpoint folder whose files are missing, corrupt or do not match the architecture."""


def all_finite(tensor: Tensor) -> bool:
    """True if the floating ``tensor`` holds no NaN or Inf. A finite sum proves it in one reduction (any NaN
    or Inf makes the sum non-finite); only a non-finite sum, which large finite values can also produce, pays
    for the element-wise check."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def describe_nonfinite(tensor: Tensor) -> str:
    """How many NaN and Inf values ``tensor`` holds, e.g. "3 NaN values" or "2 NaN and 1 Inf values"; ""
    for a finite tensor or one that is not floating point."""
    if not tensor.is_floating_point() or all_finite(tensor):
        return ""
    counts = {"NaN": int(torch.isnan(tensor).sum()), "Inf": int(torch.isinf(tensor).sum())}
    found = " and ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    return f"{found} value{'' if sum(counts.values()) == 1 else 's'}"


def check_finite(tensor: Tensor, name: str, file: str | Path) -> None:
    """Raise ``CheckpointError`` naming ``name`` and ``file`` when the floating tensor ``tensor`` read from
    ``file`` holds NaN or Inf values."""
    problem = describe_nonfinite(tensor)
    if problem:
        raise CheckpointError(
            f"{name} in {file} has {problem}; the checkpoint is corrupt, re-export or re-download it"
        )


def _parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None:
        return None
    parsed = _DTYPE_NAMES.get(dtype.removeprefix("torch.")) if isinstance(dtype, str) else dtype
    if not isinstance(parsed, torch.dtype) or not parsed.is_floating_point or parsed.itemsize < 2:
        raise ValueError(
            f"dtype must be a floating dtype (float32, bfloat16, float16 or float64), got {dtype!r}"
        )
    return parsed


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from e


def _read_config(folder: Path) -> LLaDAConfig | DreamConfig:
    file = folder / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"{folder} has no {CONFIG_FILE}; pass a Hugging Face-format checkpoint folder"
        )
    try:
        return config_from_dict(_read_json(file))
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from e


def _weight_files(folder: Path) -> tuple[list[Path], dict[str, Path]]:
    """(safetensors files to read, tensor name -> file as the index says; {} when unsharded)."""
    index_file, single = folder / INDEX_FILE, folder / SINGLE_FILE
    if index_file.is_file():
        index = _read_json(index_file)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index_file}: no 'weight_map' object")
        missing = sorted({f for f in weight_map.values() if not (folder / f).is_file()})
        if missing:
            raise CheckpointError(f"{index_file} lists shard files that do not exist: {missing}")
        index_map = {name: folder / f for name, f in weight_map.items()}
        return sorted(set(index_map.values())), index_map
    if single.is_file():
        return [single], {}
    raise FileNotFoundError(f"{folder} has neither {SINGLE_FILE} nor {INDEX_FILE}")


def _read_headers(files: list[Path]) -> dict[str, tuple[tuple[int, ...], str, Path]]:
    """name -> (shape, safetensors dtype string, file), reading only the headers."""
    stored: dict[str, tuple[tuple[int, ...], str, Path]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    sl = f.get_slice(name)
                    stored[name] = (tuple(sl.get_shape()), sl.get_dtype(), file)
        except SafetensorError as e:
            raise CheckpointError(f"{file}: corrupt or unreadable safetensors file ({e})") from e
    return stored


def _mismatches(
    expected: dict[str, tuple[int, ...]],
    stored: dict[str, tuple[tuple[int, ...], str, Path]],
    index: dict[str, Path],
) -> list[str]:
    problems = [
        f"missing: {n} (expected shape {list(expected[n])})" for n in sorted(expected.keys() - stored)
    ]
    problems += [
        f"unexpected: {n} (shape {list(stored[n][0])} in {stored[n][2].name})"
        for n in sorted(stored - expected.keys())
    ]
    for name in sorted(expected.keys() & stored.keys()):
        shape, dt, file = stored[name]
        if shape != expected[name]:
            problems.append(
                f"wrong shape: {name} expected {list(expected[name])}, found {list(shape)} in {file.name}"
            )
        if dt not in _SAFETENSORS_DTYPES:
            problems.append(f"wrong dtype: {name} is {dt} in {file.name}, expected a float type")
    for name, file in sorted(index.items()):
        if name in stored and stored[name][2] != file:
            problems.append(f"index: {name} is listed in {file.name} but stored in {stored[name][2].name}")
        elif name not in stored:
            problems.append(f"index: {name} is listed in {file.name} but not stored there")
    return problems


def _read_tokenizer(folder: Path) -> tuple[Tokenizer | None, dict[str, dict[str, Any]]]:
    extra = {name: _read_json(folder / name) for name in PASSTHROUGH_FILES if (folder / name).is_file()}
    file = folder / TOKENIZER_FILE
    if not file.is_file():
        warnings.warn(f"{folder} has no {TOKENIZER_FILE}: the model loads without a tokenizer", stacklevel=3)
        return None, extra
    try:
        return Tokenizer.from_file(str(file)), extra
    except Exception as e:  # the tokenizers library raises plain Exception subclasses
        raise CheckpointError(f"{file}: cannot be read by the tokenizers library ({e})") from e


def load(
    path_or_name: str | Path, dtype: torch.dtype | str | None = None, device: str | torch.device = "cpu"
) -> DiffusionLM:
    """Load a checkpoint folder (or a packaged model name such as "tiny-llada") as a ``DiffusionLM``.

    dtype: a float dtype (or its name) to cast to; None keeps the stored dtype (float32 if the file mixes
    dtypes). The model is returned in eval mode with ``requires_grad`` off. Raises ``CheckpointError``
    listing every missing, unexpected or mis-shaped tensor, or naming a tensor with NaN/Inf values, and
    ``ConfigError`` for a bad config.json.
    """
    folder = resolve(path_or_name)
    target = _parse_dtype(dtype)
    device = torch.device(device)
    config = _read_config(folder)
    files, index = _weight_files(folder)
    stored = _read_headers(files)

    spec = spec_for_config(config)
    with torch.device("meta"):
        model = spec.model_cls(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    head = f"{spec.names.head}.weight"
    if config.dims().tie_embeddings and head in stored and head not in expected:
        del stored[head]  # some exporters write the tied head too; the embedding is authoritative
        index.pop(head, None)
    problems = _mismatches(expected, stored, index)
    if problems:
        raise CheckpointError(
            f"{folder} does not match {type(model).__name__} ({len(problems)} problem(s)):\n  "
            + "\n  ".join(problems)
        )

    if target is None:
        kinds = {_SAFETENSORS_DTYPES[dt] for _, dt, _ in stored.values()}
        target = kinds.pop() if len(kinds) == 1 else torch.float32
    state: dict[str, Tensor] = {}
    for file in files:
        names = [n for n, (_, _, f) in stored.items() if f == file]
        try:
            with safe_open(str(file), framework="pt", device=str(device)) as f:
                for name in names:
                    tensor = f.get_tensor(name)
                    check_finite(tensor, name, file)
                    state[name] = tensor.to(target)
        except SafetensorError as e:
            raise CheckpointError(f"{file}: corrupt or unreadable safetensors file ({e})") from e
    model.load_state_dict(state, strict=True, assign=True)
    model.eval().requires_grad_(False)
    tokenizer, tokenizer_files = _read_tokenizer(folder)
    return DiffusionLM(model, tokenizer, tokenizer_files)


def _plan_shards(sizes: dict[str, int], max_shard_bytes: int) -> list[list[str]]:
    """Greedy split of tensors (in order) into shards of at most max_shard_bytes; a single tensor larger than
    the limit gets a shard of its own."""
    shards: list[list[str]] = [[]]
    used = 0
    for name, size in sizes.items():
        if shards[-1] and used + size > max_shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    return shards


def write_weights(
    state: dict[str, Tensor], folder: Path, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
) -> None:
    """Write ``state`` into ``folder`` as ``model.safetensors``, or as numbered shards of at most
    ``max_shard_bytes`` plus ``model.safetensors.index.json`` when larger."""
    sizes = {name: t.numel() * t.element_size() for name, t in state.items()}
    shards = _plan_shards(sizes, max_shard_bytes)
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(
            {n: state[n].detach().contiguous().cpu() for n in shards[0]}, str(folder / SINGLE_FILE), meta
        )
        return
    weight_map: dict[str, str] = {}
    for i, names in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: state[n].detach().contiguous().cpu() for n in names}, str(folder / fname), meta)
        weight_map |= dict.fromkeys(names, fname)
    index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def save(
    dlm: DiffusionLM,
    path: str | Path,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
) -> Path:
    """Write ``dlm`` as a Hugging Face-format folder at ``path``; returns the folder.

    Weights go to ``model.safetensors`` or, when larger than ``max_shard_bytes``, to numbered shards plus an
    index. config.json is the config's ``to_dict()`` with ``torch_dtype`` set to the stored dtype; the
    tokenizer and pass-through files are written when present. The write is atomic: an error leaves no
    partial folder and an existing one untouched (`atomic_folder`). An existing non-empty ``path`` is
    replaced only with ``overwrite=True`` and only when it is a checkpoint folder (has config.json).
    """
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    path = Path(path).expanduser()
    with atomic_folder(path, overwrite) as tmp:
        write_weights(dlm.model.state_dict(), tmp, max_shard_bytes)
        config = dlm.config.to_dict()
        config["torch_dtype"] = str(dlm.dtype).removeprefix("torch.")
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if dlm.tokenizer is not None:
            dlm.tokenizer.save(str(tmp / TOKENIZER_FILE))
        for name, content in dlm.tokenizer_files.items():
            (tmp / name).write_text(
                json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
    return path
