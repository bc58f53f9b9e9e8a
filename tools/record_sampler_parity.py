"""Record the token-parity fixture of the samplers: what the reference implementations generate on the
project's seeded random tiny LLaDA and Dream models, for every sampler path.

The reference code is not part of this repository; this script only calls it. ``export`` (in the project's
environment) checks that every float32 case is decided by margins, not by rounding (below), and writes the
seeded tiny checkpoints; ``record`` (in a separate environment with torch 2.13.0 CPU and transformers 4.46.2,
holding the reference files; it does not import dllm_sampler) runs the reference on them and writes the
fixture. The exact commands are in the docstring of
``packages/dllm-sampler/tests/test_sampler_parity.py``.

Each case runs the reference once from ``torch.manual_seed(seed)`` (the reference draws from the global
RNG): LLaDA's ``generate`` with the case's keyword arguments, or Dream's ``diffusion_generate`` with them
(a ``readme`` case omits ``top_k``, as Dream's README does, so transformers supplies its default). Models
are loaded as users load them, ``from_pretrained(folder, torch_dtype=...)``.

The models are `dllm_sampler.testing.sharp_char_model` (seed `SEED`, weights scaled by `WEIGHT_SCALE`): at
the default init every masked position's distribution is nearly uniform, so e.g. Dream's entropies tie to
within float32 rounding and two CPUs (or BLAS builds) commit different positions. ``export`` runs dllmq's
sampler on a float64 copy of each model for every float32 case (`dllm_sampler.testing.decision_margin`) and
refuses to write the checkpoints unless every argmax and every confidence-rank selection is decided by a
relative margin of at least `dllm_sampler.testing.DECISIVE_MARGIN` (1e-4, about 1000 float32 ulps) and the
float64 run gives the float32 run's tokens. `SEED` and `WEIGHT_SCALE` were chosen by that check (smallest
margin 3.2e-4, in ``dream/entropy_readme``). bfloat16 cases are not covered by it: their scores are rounded
to 8 bits, so they tie exactly and break the ties by position; they rely on every CPU computing the bfloat16
network to the same bits (the seed-0 fixture's bfloat16 cases, recorded on an AMD EPYC, matched on an Intel
Xeon).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

SEED = 6
"""The seed of `dllm_sampler.testing.sharp_char_model` for both tiny models (and of the unseeded cases)."""
WEIGHT_SCALE = 12.0
"""The weight scale of `dllm_sampler.testing.sharp_char_model` for both tiny models."""

PROMPTS = [[40, 73, 77, 80, 15, 26], [55, 86, 70, 73, 18, 29]]
"""Two unpadded prompt rows (character ids of the char tokenizer, no special ids)."""
PADDED = ([[0, 0, 40, 73, 77, 80], [55, 86, 70, 73, 18, 29]], [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
"""A left-padded batch and its attention mask (Dream only: LLaDA's reference ignores attention masks)."""

LLADA_BASE = {"steps": 8, "gen_length": 16, "block_length": 8}
LLADA_CASES: list[tuple[str, dict[str, Any], int | None]] = [
    ("low_confidence", {"remasking": "low_confidence", "temperature": 0.0}, None),
    ("low_confidence_gumbel", {"remasking": "low_confidence", "temperature": 0.8}, 1),
    ("random", {"remasking": "random", "temperature": 0.0}, 2),
    ("random_gumbel", {"remasking": "random", "temperature": 1.0}, 3),
    ("cfg", {"remasking": "low_confidence", "temperature": 0.0, "cfg_scale": 1.5}, None),
    ("cfg_random_gumbel", {"remasking": "random", "temperature": 0.5, "cfg_scale": 0.5}, 4),
]
"""(name, ``generate`` keyword arguments beyond `LLADA_BASE`, seed or None)."""

DREAM_BASE = {
    "max_new_tokens": 16,
    "steps": 8,
    "alg_temp": 0.0,
    "temperature": 0.0,
    "top_p": None,
    "top_k": None,
}
DREAM_CASES: list[tuple[str, str | None, dict[str, Any], int | None]] = [
    ("maskgit_plus", None, {"alg": "maskgit_plus"}, None),
    ("topk_margin", None, {"alg": "topk_margin"}, None),
    ("entropy", None, {"alg": "entropy"}, None),
    ("entropy_harness", "harness", {"alg": "entropy", "top_p": 0.95}, None),
    ("origin", None, {"alg": "origin"}, 5),
    ("origin_temperature", None, {"alg": "origin", "temperature": 0.7}, 6),
    ("maskgit_plus_temperature", None, {"alg": "maskgit_plus", "temperature": 0.9}, 7),
    ("entropy_readme", "readme", {"alg": "entropy", "temperature": 1.0, "top_p": 0.95}, 8),
    ("entropy_harness_temperature", "harness", {"alg": "entropy", "temperature": 1.0, "top_p": 0.95}, 8),
    ("topk_margin_alg_temp", None, {"alg": "topk_margin", "alg_temp": 0.5}, 9),
    ("entropy_alg_temp_temperature", None, {"alg": "entropy", "alg_temp": 0.3, "temperature": 0.5}, 10),
]
"""(name, convention or None, ``diffusion_generate`` keyword arguments over `DREAM_BASE`, seed or None).
A ``readme`` case drops ``top_k`` from the call. The two top-p cases sample at temperature 1, not the
README's 0.2: on the sharp models only a flatter distribution puts more than 50 tokens in the 0.95 nucleus,
so that the ``top_k=50`` transformers adds to the ``readme`` call changes its tokens."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _dllmq_config(arch: str, convention: str | None, call: dict[str, Any]) -> Any:
    """dllmq's generation config of a reference call (the test's mapping)."""
    from dllm_sampler import DreamGenerationConfig, LLaDAGenerationConfig

    if arch == "llada":
        return LLaDAGenerationConfig(**call)
    if convention == "readme":
        return DreamGenerationConfig.readme(**call)
    if convention == "harness":
        return DreamGenerationConfig.harness(**call)
    return DreamGenerationConfig(**call)


def check_margins() -> None:
    """Raise SystemExit unless every float32 case, run by dllmq on a float64 copy of its model, is decided
    by margins of at least ``DECISIVE_MARGIN`` and gives the float32 model's tokens."""
    from dllm_sampler import generate
    from dllm_sampler.testing import DECISIVE_MARGIN, decision_margin, sharp_char_model

    failures = []
    for arch in ("llada", "dream"):
        dlm = sharp_char_model(arch, SEED, WEIGHT_SCALE)
        wide = sharp_char_model(arch, SEED, WEIGHT_SCALE).to(torch.float64)
        for name, convention, call, seed, prompt, attention_mask in _calls(arch):
            config = _dllmq_config(arch, convention, call)
            mask = None if attention_mask is None else torch.tensor(attention_mask)
            draws = SEED if seed is None else seed
            tokens, margin = decision_margin(
                wide, torch.tensor(prompt), mask, config, torch.Generator().manual_seed(draws)
            )
            narrow = generate(
                dlm, torch.tensor(prompt), mask, config, generator=torch.Generator().manual_seed(draws)
            )
            same = torch.equal(tokens, narrow)
            print(f"{arch}/{name}: smallest decision margin {margin:.3g}; float64 tokens = float32's: {same}")
            if margin < DECISIVE_MARGIN or not same:
                failures.append(f"{arch}/{name}")
    if failures:
        raise SystemExit(
            f"cases decided by rounding, not by a margin of {DECISIVE_MARGIN}: {', '.join(failures)}; pick "
            "another SEED or WEIGHT_SCALE (each case's smallest margin is printed above)"
        )


def export(folder: Path) -> None:
    """Check the cases' margins (`check_margins`), then write the seeded tiny models as float32 checkpoints
    ``folder/{llada,dream}`` with a ``generation_config.json`` (the reference's ``from_pretrained`` wants
    one) and their weight digests."""
    from dllm_sampler.io import save
    from dllm_sampler.testing import sharp_char_model, weights_digest

    check_margins()
    for arch in ("llada", "dream"):
        dlm = sharp_char_model(arch, SEED, WEIGHT_SCALE)
        dlm.tokenizer_files["generation_config.json"] = {
            "bos_token_id": dlm.bos_token_id,
            "eos_token_id": dlm.eos_token_id,
            "pad_token_id": dlm.pad_token_id,
            "mask_token_id": dlm.mask_token_id,
        }
        out = save(dlm, folder / arch, overwrite=True)
        (out / "weights_digest.txt").write_text(weights_digest(dlm) + "\n", encoding="utf-8")
        print(f"wrote {out}")


def _load_reference(ref: Path, arch: str, folder: Path, dtype: torch.dtype) -> Any:
    sys.path.insert(0, str(ref))
    if arch == "llada":
        from qdlm_ref.modeling_llada import LLaDAModelLM as cls  # type: ignore[import-not-found]
    else:
        from qdlm_ref.modeling_dream import DreamModel as cls  # type: ignore[import-not-found]
    return cls.from_pretrained(str(folder), torch_dtype=dtype).eval()


def _calls(arch: str) -> list[tuple[str, str | None, dict[str, Any], int | None, Any, Any]]:
    """``arch``'s cases as ``(name, convention, call, seed, prompt, attention_mask)``: the keyword arguments
    of the reference call (a ``readme`` call lacks ``top_k``)."""
    if arch == "llada":
        # All ones: upstream's guidance branch needs a mask (it fails without one), and the model ignores it.
        ones = [[1] * len(row) for row in PROMPTS]
        return [(name, None, {**LLADA_BASE, **kw}, seed, PROMPTS, ones) for name, kw, seed in LLADA_CASES]
    runs: list[tuple[str, str | None, dict[str, Any], int | None, Any, Any]] = [
        (name, conv, {**DREAM_BASE, **kw}, seed, PROMPTS, None) for name, conv, kw, seed in DREAM_CASES
    ]
    padded_call = {**DREAM_BASE, "alg": "entropy", "top_p": 0.95}
    runs.append(("entropy_harness_padded", "harness", padded_call, None, *PADDED))
    for _, convention, call, *_ in runs:
        if convention == "readme":
            del call["top_k"]
    return runs


def _run_reference(model: Any, ref: Path, arch: str, call: dict[str, Any], prompt: Any, mask: Any) -> Any:
    """One reference call: LLaDA's ``generate`` or Dream's ``diffusion_generate``; ``[B, L]`` long."""
    if arch == "llada":
        sys.path.insert(0, str(ref))
        from llada_generate import generate  # type: ignore[import-not-found]

        return generate(model, prompt, mask, mask_id=model.config.mask_token_id, **call)
    return model.diffusion_generate(
        prompt, attention_mask=mask, return_dict_in_generate=True, **call
    ).sequences


def _cases(ref: Path, ckpt: Path, arch: str, dtype_name: str) -> list[dict[str, Any]]:
    model = _load_reference(ref, arch, ckpt / arch, DTYPES[dtype_name])
    cases = []
    for name, convention, call, seed, prompt, attention_mask in _calls(arch):
        torch.manual_seed(SEED if seed is None else seed)
        mask = None if attention_mask is None else torch.tensor(attention_mask)
        out = _run_reference(model, ref, arch, call, torch.tensor(prompt), mask)
        cases.append(
            {"name": f"{arch}/{name}/{dtype_name}", "arch": arch, "dtype": dtype_name, "seed": seed}
            | {"convention": convention, "call": call, "prompt": prompt, "attention_mask": attention_mask}
            | {"output": out.tolist()}
        )
    return cases


def record(ref: Path, ckpt: Path, out: Path) -> None:
    """Run every case on the reference and write the fixture JSON to ``out``."""
    import transformers

    cases = []
    for dtype_name in DTYPES:
        cases += _cases(ref, ckpt, "llada", dtype_name)
        cases += _cases(ref, ckpt, "dream", dtype_name)
    fixture = {
        "recorded_with": {"torch": torch.__version__, "transformers": transformers.__version__},
        "reference": {
            "qdlm": "github FelixMessi/QDLM a106d7047a0ea2668a758e1ea4bbfb44f5122f20 DuQuant/models",
            "llada_generate": "github ML-GSAI/LLaDA b7e6c3565f194352da44b38dd12b6970597309f3 generate.py",
        },
        "model_seed": SEED,
        "weight_scale": WEIGHT_SCALE,
        "weights_digest": {
            arch: (ckpt / arch / "weights_digest.txt").read_text(encoding="utf-8").strip()
            for arch in ("llada", "dream")
        },
        "cases": cases,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(fixture, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {len(cases)} cases to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write the seeded tiny checkpoints (project environment)")
    exp.add_argument("folder", type=Path)
    rec = sub.add_parser("record", help="run the reference and write the fixture (reference environment)")
    rec.add_argument("--ref", type=Path, required=True, help="folder holding qdlm_ref/ and llada_generate.py")
    rec.add_argument("--ckpt", type=Path, required=True, help="the folder given to export")
    rec.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "export":
        export(args.folder)
    else:
        record(args.ref, args.ckpt, args.out)


if __name__ == "__main__":
    main()
