"""Turn a recipe's `CalibrationSpec` into a ``dllm_calib.CalibrationSet`` for a model.

Three origins: a ``dllm_calib`` builder run on the model (reading the shipped text or a local corpus,
``dllm_calib.corpus_source``; TMAS runs the float model's own sampler, with the model folder's generation
defaults unless the spec overrides them), a saved ``CalibrationSet`` folder,
or a ``.json`` / ``.jsonl`` list of ``{"input_ids": [...], "attention_mask": [...]}`` records as exported
for llm-compressor / GPTQModel / AutoAWQ (``CalibrationSet.to_calibration_list``): positions holding the
model's mask token are the masked ones.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from dllm_calib import (
    CalibrationSet,
    CalibrationState,
    Provenance,
    TextSource,
    TMASConfig,
    build_tmas,
    builder_config,
    corpus_source,
    score_confidence,
    text_source,
)
from dllm_sampler import DiffusionLM, default_generation_config
from tqdm import tqdm

from dllm_bench.recipes import CalibrationSpec

__all__ = ["load_calibration_list", "prepare_calibration", "with_confidence"]


def _sampler(dlm: DiffusionLM, overrides: dict[str, Any] | None) -> Any:
    """The arch's sampler config with the model folder's defaults and then ``overrides`` applied."""
    config = default_generation_config(dlm.arch)
    names = {f.name for f in dataclasses.fields(config)}
    values = {k: v for k, v in dlm.generation_defaults.items() if k in names}
    unknown = sorted(set(overrides or {}) - names)
    if unknown:
        raise ValueError(
            f"calibration.sampler has fields {unknown} that {type(config).__name__} lacks; "
            f"it has {sorted(names)}"
        )
    return dataclasses.replace(config, **{**values, **(overrides or {})})


def _records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {{'input_ids', 'attention_mask'}} records")
    return data


def load_calibration_list(path: str | Path, mask_token_id: int) -> CalibrationSet:
    """A set from a list-of-dicts file (``.json`` list or ``.jsonl`` lines) made for other PTQ tools.

    ``attention_mask`` is optional (all ones); a state's mask ratio is its share of masked real tokens.
    """
    path = Path(path)
    states = []
    for i, rec in enumerate(_records(path)):
        if not isinstance(rec, dict) or "input_ids" not in rec:
            raise ValueError(f"{path}: record {i} has no 'input_ids'")
        ids = torch.tensor(rec["input_ids"], dtype=torch.int64)
        attn = torch.tensor(rec.get("attention_mask", [1] * len(ids)), dtype=torch.int64).to(torch.bool)
        if attn.shape != ids.shape:
            raise ValueError(f"{path}: record {i}: attention_mask and input_ids differ in length")
        masked = (ids == mask_token_id) & attn
        ratio = float(masked.sum()) / max(int(attn.sum()), 1)
        states.append(CalibrationState(ids, attn, masked, mask_ratio=ratio, t=ratio, source_index=i))
    if not states:
        raise ValueError(f"{path}: no records")
    prov = Provenance(builder="external-list", source={"kind": "file", "path": str(path)})
    return CalibrationSet(tuple(states), prov, mask_token_id)


def prepare_calibration(
    spec: CalibrationSpec, dlm: DiffusionLM, seed: int, progress: bool = False
) -> CalibrationSet:
    """The calibration set ``spec`` describes, for the float model ``dlm``.

    ``seed`` is the recipe seed; it fills the builder's ``seed`` when ``spec.params`` has none.
    ``progress`` shows a tqdm bar on stderr over the TMAS sampler steps (the other builders only cut and
    mask text, which takes seconds).
    """
    if spec.path is not None:
        path = Path(spec.path).expanduser()
        if path.is_dir():
            cset = CalibrationSet.load(path)
        elif path.suffix in (".json", ".jsonl"):
            cset = load_calibration_list(path, dlm.mask_token_id)
        else:
            raise FileNotFoundError(
                f"calibration.path {str(path)!r} is neither a saved CalibrationSet folder nor a .json/.jsonl "
                "file"
            )
        return cset if spec.limit is None else cset.subset(range(min(spec.limit, len(cset))))
    assert spec.builder is not None
    params = {"seed": seed, **spec.params}
    if spec.builder == "tmas":
        params["sampler"] = _sampler(dlm, spec.sampler)
    config = builder_config(spec.builder, **params)
    source = _source(spec)
    if not isinstance(config, TMASConfig):
        return config.build(dlm, source)
    with tqdm(desc="TMAS calibration: sampler steps", unit="step", disable=not progress, leave=False) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return build_tmas(config, dlm, source, progress=advance)


def _source(spec: CalibrationSpec) -> TextSource:
    """The text ``spec`` reads: the shipped generator, or its local corpus with the corpus's conventions."""
    if not spec.uses_corpus:
        return text_source(spec.source, field=spec.field)
    return corpus_source(spec.corpus, spec.source, spec.field, spec.split, spec.max_read_tokens)


def with_confidence(dlm: DiffusionLM, cset: CalibrationSet, batch_size: int) -> CalibrationSet:
    """``cset`` with the float model's per-token confidence, scored only if some state lacks it."""
    return cset if cset.has_confidence else score_confidence(dlm, cset, batch_size)
