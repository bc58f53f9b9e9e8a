"""Record the LLaDA2 reference-parity fixture: float32 logits and generate() tokens of the reference
modeling code on the project's seeded random tiny LLaDA2 checkpoints.

The reference code is not part of this repository; this script only calls it. ``export`` (in the
project's environment) writes the checkpoints of `dllm_sampler.testing.LLADA2_PARITY_CONFIGS`, sharded, with
their weight digests; ``record`` (in a separate environment with torch 2.13.0 CPU, transformers 4.57.1 and
safetensors, holding the reference ``configuration_llada2_moe.py`` / ``modeling_llada2_moe.py`` in a
package ``llada2_ref``; it does not import dllm_sampler) runs the reference on them and writes the fixture.
The exact commands are in the docstring of ``packages/dllm-sampler/tests/test_llada2_parity.py``.

Cases, on one row of `IDS` (a few of them the mask id) with RoPE positions 0..L-1, attention by SDPA:

- ``full``: bidirectional attention (no mask), logits [L, V].
- ``block_causal``: the additive block-causal mask of `BLOCK` (0 where a query's block is at or after the
  key's, -inf elsewhere), logits [L, V].
- ``kv_cache``: the first `PREFIX` positions run with the block-causal mask and ``use_cache=True``; the
  last block then runs alone with that ``DynamicCache``, an all-zero additive mask over cache + block and
  positions PREFIX..L-1; logits of the block [BLOCK, V].
- ``generate``: the model card's ``generate()`` from ``torch.manual_seed(seed)`` with each of `GENERATE`.
  It builds its block mask in bfloat16, which SDPA refuses beside float32 queries, so the recorder casts
  that mask to float32 on its way into ``forward`` (its values, 0 and -inf, are exact in both).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

SEED = 0
"""The seed of `dllm_sampler.testing.random_llada2`."""
IDS = [5, 17, 47, 30, 2, 47, 47, 11, 40, 47, 8, 23]
"""One input row of the forward cases (vocabulary 48, mask id 47)."""
BLOCK = 4
PREFIX = 8
PROMPT = [5, 17, 30, 2, 11, 40]
"""The generate() prompt (6 tokens: one whole block and half of the next)."""
GENERATE: list[tuple[str, dict[str, Any], int]] = [
    ("threshold_high", {"threshold": 0.95, "temperature": 0.0}, 1),
    ("threshold_low", {"threshold": 0.06, "temperature": 0.0}, 2),
    ("temperature_top_p", {"threshold": 0.95, "temperature": 0.7, "top_p": 0.9}, 3),
]
"""(name, generate() keyword arguments beyond `GENERATE_BASE`, seed)."""
GENERATE_BASE = {"block_length": BLOCK, "steps": BLOCK, "gen_length": 10, "eos_id": 46, "mask_id": 47}
SHARD_BYTES = 100_000
"""Shard size of the exported checkpoints (so loading reads several shards and an index)."""


def export(folder: Path) -> None:
    """Write every `LLADA2_PARITY_CONFIGS` model (seed `SEED`) to ``folder/<name>`` with its digest."""
    from dllm_sampler.io import save
    from dllm_sampler.testing import LLADA2_PARITY_CONFIGS, random_llada2, weights_digest

    for name, overrides in LLADA2_PARITY_CONFIGS.items():
        dlm = random_llada2(SEED, **overrides)
        out = save(dlm, folder / name, max_shard_bytes=SHARD_BYTES, overwrite=True)
        (out / "weights_digest.txt").write_text(weights_digest(dlm) + "\n", encoding="utf-8")
        print(f"wrote {out}")


def _load_reference(folder: Path) -> Any:
    from llada2_ref.configuration_llada2_moe import LLaDA2MoeConfig  # type: ignore[import-not-found]
    from llada2_ref.modeling_llada2_moe import LLaDA2MoeModelLM  # type: ignore[import-not-found]
    from safetensors.torch import load_file

    data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config = LLaDA2MoeConfig(**data, attn_implementation="sdpa")
    model = LLaDA2MoeModelLM(config).float().eval()
    state: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(file)))
    model.load_state_dict(state, strict=True)
    return model


def _additive(allowed: torch.Tensor) -> torch.Tensor:
    return torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))[None, None]


def _block_allowed(length: int) -> torch.Tensor:
    block = torch.arange(length) // BLOCK
    return block[None, :] <= block[:, None]


def _cases(model: Any) -> dict[str, Any]:
    from transformers.cache_utils import DynamicCache

    ids = torch.tensor([IDS])
    n = ids.shape[1]
    pos = torch.arange(n)[None]
    out: dict[str, Any] = {}
    with torch.no_grad():
        out["full"] = model(ids, position_ids=pos).logits[0].tolist()
        mask = _additive(_block_allowed(n))
        out["block_causal"] = model(ids, attention_mask=mask, position_ids=pos).logits[0].tolist()
        cache = DynamicCache()
        prefix_mask = _additive(_block_allowed(PREFIX))
        model(
            ids[:, :PREFIX],
            attention_mask=prefix_mask,
            position_ids=pos[:, :PREFIX],
            past_key_values=cache,
            use_cache=True,
        )
        block_mask = torch.zeros(1, 1, n - PREFIX, n)
        logits = model(
            ids[:, PREFIX:],
            attention_mask=block_mask,
            position_ids=pos[:, PREFIX:],
            past_key_values=cache,
            use_cache=True,
        ).logits
        out["kv_cache"] = logits[0].tolist()
    forward = model.forward

    def forward_float_mask(*args: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        if attention_mask is not None and attention_mask.is_floating_point():
            attention_mask = attention_mask.float()
        return forward(*args, attention_mask=attention_mask, **kwargs)

    model.forward = forward_float_mask
    generated = {}
    for name, kwargs, seed in GENERATE:
        torch.manual_seed(seed)
        tokens = model.generate(inputs=torch.tensor([PROMPT]), **GENERATE_BASE, **kwargs)
        generated[name] = {"kwargs": kwargs, "seed": seed, "tokens": tokens[0].tolist()}
    out["generate"] = generated
    return out


def record(ref: Path, ckpt: Path, out: Path) -> None:
    """Run the reference on every exported checkpoint and write the fixture JSON."""
    import transformers

    sys.path.insert(0, str(ref))
    fixture: dict[str, Any] = {
        "recorded_with": {"torch": torch.__version__, "transformers": transformers.__version__},
        "ids": IDS,
        "block": BLOCK,
        "prefix": PREFIX,
        "prompt": PROMPT,
        "generate_base": GENERATE_BASE,
        "models": {},
    }
    for folder in sorted(p for p in ckpt.iterdir() if (p / "config.json").is_file()):
        digest = (folder / "weights_digest.txt").read_text(encoding="utf-8").strip()
        fixture["models"][folder.name] = {"weights_digest": digest, **_cases(_load_reference(folder))}
        print(f"recorded {folder.name}")
    out.write_text(json.dumps(fixture) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write the seeded tiny checkpoints (project environment)")
    exp.add_argument("folder", type=Path)
    rec = sub.add_parser("record", help="run the reference on them (reference environment)")
    rec.add_argument("--ref", type=Path, required=True, help="folder holding the package llada2_ref/")
    rec.add_argument("--ckpt", type=Path, required=True, help="the folder given to export")
    rec.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "export":
        export(args.folder)
    else:
        record(args.ref, args.ckpt, args.out)


if __name__ == "__main__":
    main()
