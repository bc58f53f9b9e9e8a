"""Token-for-token parity of the samplers with the reference implementations.

``fixtures/sampler_parity.json`` holds what the reference code generated on the seeded random tiny models
of `dllm_sampler.testing.sharp_char_model` (seed 6, weights scaled by 12): LLaDA's ``generate`` (github
ML-GSAI/LLaDA b7e6c356, ``generate.py``) and Dream's ``DreamGenerationMixin.diffusion_generate`` as QDLM
vendors it (github FelixMessi/QDLM a106d704,
``DuQuant/models/{modeling_llada,modeling_dream,dream_generation_utils}.py``), in float32 and bfloat16, for
every sampler path: LLaDA low-confidence and random remasking, greedy and Gumbel, with and without guidance;
Dream maskgit_plus, topk_margin, entropy (with the harness's and the README's top-p/top-k conventions),
origin, greedy and seeded, with ``alg_temp``, and a left-padded batch.

The float32 cases are tie-free by construction, so they hold on any CPU, BLAS build and thread count: every
argmax and every confidence-rank selection they make is decided by a relative margin of at least
`dllm_sampler.testing.DECISIVE_MARGIN` (1e-4, some 1000 float32 ulps; the smallest is 3.2e-4), measured by
running dllmq on a float64 copy of the model (`test_float32_cases_are_decided_by_margins`; the recorder's
``export`` refuses to write checkpoints that fail the same check). At the default init (N(0, 0.02^2)
weights, nearly uniform distributions) Dream's entropies tied to within float32 rounding, and the reference
itself committed other positions on an Intel Xeon than on the AMD EPYC that had recorded the fixture. The
bfloat16 cases round scores to 8 bits, so they tie exactly and break ties by position; they rely on every
CPU rounding the bfloat16 network alike.

To regenerate it, run from the repository root (a separate venv with the reference's dependencies, the
reference files outside the repository; nothing of them is committed; ``git clone --bare`` or any mirror
of the two repositories will do)::

    S=/work/scratch-sampler; REF=$S/ref
    git clone --bare https://github.com/FelixMessi/QDLM $S/QDLM.git
    git clone --bare https://github.com/ML-GSAI/LLaDA $S/LLaDA.git
    mkdir -p $REF/qdlm_ref && touch $REF/qdlm_ref/__init__.py
    for F in modeling_llada.py configuration_llada.py modeling_dream.py configuration_dream.py \
             dream_generation_utils.py; do
        git --git-dir=$S/QDLM.git show a106d704:DuQuant/models/$F > $REF/qdlm_ref/$F; done
    git --git-dir=$S/LLaDA.git show b7e6c356:generate.py > $REF/llada_generate.py
    python3.11 -m venv $S/venv && $S/venv/bin/pip install torch==2.13.0 && \
        $S/venv/bin/pip install transformers==4.46.2 numpy safetensors
    uv run python tools/record_sampler_parity.py export $S/ckpt
    $S/venv/bin/python tools/record_sampler_parity.py record --ref $REF --ckpt $S/ckpt \
        --out packages/dllm-sampler/tests/fixtures/sampler_parity.json

(``tools/record_sampler_parity.py``'s docstring describes the cases and how the reference is called.)
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from dllm_sampler import DreamGenerationConfig, LLaDAGenerationConfig, generate
from dllm_sampler.adapter import DiffusionLM
from dllm_sampler.generate_dream import DREAM_README_TOP_K
from dllm_sampler.testing import DECISIVE_MARGIN, decision_margin, sharp_char_model, weights_digest

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "sampler_parity.json").read_text())
CASES = {case["name"]: case for case in FIXTURE["cases"]}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@functools.cache
def _model(arch: str, dtype: str) -> DiffusionLM:
    dlm = sharp_char_model(arch, FIXTURE["model_seed"], FIXTURE["weight_scale"])
    if weights_digest(dlm) != FIXTURE["weights_digest"][arch]:
        pytest.fail(
            f"the seeded random tiny {arch} model changed since the fixture was recorded; regenerate "
            "fixtures/sampler_parity.json (recipe in this module's docstring)"
        )
    return dlm.to(DTYPES[dtype])


def _config(case: dict[str, Any], **overrides: Any) -> LLaDAGenerationConfig | DreamGenerationConfig:
    call = dict(case["call"])
    if case["arch"] == "llada":
        return LLaDAGenerationConfig(**call, **overrides)
    if case["convention"] == "readme":
        return DreamGenerationConfig.readme(**call, **overrides)
    if case["convention"] == "harness":
        return DreamGenerationConfig.harness(**call, **overrides)
    return DreamGenerationConfig(**call, **overrides)


def _mask(case: dict[str, Any]) -> torch.Tensor | None:
    return None if case["attention_mask"] is None else torch.tensor(case["attention_mask"])


def _run(case: dict[str, Any], generator: torch.Generator | None, **overrides: Any) -> list[list[int]]:
    out = generate(
        _model(case["arch"], case["dtype"]),
        torch.tensor(case["prompt"]),
        _mask(case),
        _config(case, **overrides),
        generator=generator,
    )
    return out.tolist()


def _generator(case: dict[str, Any]) -> torch.Generator:
    return torch.Generator().manual_seed(FIXTURE["model_seed"] if case["seed"] is None else case["seed"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_sampler_matches_the_reference_token_for_token(name: str) -> None:
    case = CASES[name]
    assert _run(case, _generator(case)) == case["output"]


@pytest.mark.parametrize("name", sorted(n for n, case in CASES.items() if case["dtype"] == "float32"))
def test_float32_cases_are_decided_by_margins(name: str) -> None:
    """Run in float64, the case makes the fixture's decisions, each by a margin far above float32 rounding:
    no CPU, BLAS build or thread count can flip one in float32 (module docstring)."""
    case = CASES[name]
    wide = sharp_char_model(case["arch"], FIXTURE["model_seed"], FIXTURE["weight_scale"]).to(torch.float64)
    tokens, margin = decision_margin(
        wide, torch.tensor(case["prompt"]), _mask(case), _config(case), _generator(case)
    )
    assert tokens.tolist() == case["output"]
    assert margin >= DECISIVE_MARGIN, f"{name} is decided by a margin of {margin:.3g}, a near-tie"


def test_global_rng_draws_as_the_reference_does() -> None:
    """Without a generator the samplers draw from the global RNG, as the reference code does."""
    for name in ("llada/random_gumbel/float32", "dream/origin_temperature/bfloat16"):
        case = CASES[name]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(case["seed"])
            assert _run(case, None) == case["output"], name


def test_readme_convention_is_top_k_50_and_matters() -> None:
    readme = CASES["dream/entropy_readme/float32"]
    harness = CASES["dream/entropy_harness_temperature/float32"]
    assert "top_k" not in readme["call"] and harness["call"]["top_k"] is None
    assert _config(readme).top_k == DREAM_README_TOP_K
    assert readme["output"] != harness["output"]  # same seed: only the transformers top_k=50 differs


@pytest.mark.parametrize(
    "name",
    [
        "llada/random_gumbel/float32",  # Gumbel noise over the window only
        "dream/origin/float32",  # U(0, 1) over [B, L] instead of the masked positions
        "dream/topk_margin_alg_temp/float32",  # a float64 draw per row instead of one over [B, L]
        "dream/entropy_harness/bfloat16",  # top-n over the candidates only: bfloat16 ties break differently
        "dream/entropy/bfloat16",  # float32 RoPE and scores instead of bfloat16
    ],
)
def test_the_fixture_tells_dllmq_draws_from_the_reference(name: str) -> None:
    """The cases can fail: without ``reference_exact`` (dllmq's own draws, selection and float32 rounding)
    these miss the reference's tokens."""
    case = CASES[name]
    assert _run(case, _generator(case), reference_exact=False) != case["output"]
