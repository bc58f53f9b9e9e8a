"""AWQ's llm-awq options in the pipeline: the block-output loss on a block feed, clip, zero point."""

from __future__ import annotations

import pytest
import torch
from dllm_bench.pipeline import BlockRunner, quantize_model
from dllm_bench.pipeline.feed import BlockFeed, CachedBatch, HiddenCache
from dllm_bench.recipes import Recipe, load_recipe
from dllm_calib import ChannelStatsCollector, TokenFeed, collect
from dllm_kernels import QuantSpec
from dllm_sampler import DiffusionLM
from dllm_sampler.testing import CHAR_VOCAB, random_char_model
from dllm_weightquant import AWQConfig, apply_awq, fake_quantize_weight
from pydantic import ValidationError

SMALL_CALIBRATION = {"builder": "random", "params": {"num_samples": 6, "seq_len": 24}, "batch_size": 4}


def _salient(dlm: DiffusionLM) -> DiffusionLM:
    with torch.no_grad():
        for b in dlm.topology:
            d = b.attn_norm.weight.shape[0]
            b.attn_norm.weight.mul_(torch.linspace(0.2, 4.0, d))
            b.mlp_norm.weight.mul_(torch.linspace(4.0, 0.2, d))
    return dlm


def _block_feed(dlm: DiffusionLM) -> BlockFeed:
    """Block 0 of ``dlm`` over two token batches (the second one padded), as the pipeline feeds it."""
    ids = torch.randint(4, CHAR_VOCAB, (4, 20), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[3, 15:] = 0
    runner = BlockRunner(dlm)
    batches = list(TokenFeed(dlm, [ids[:2], (ids[2:], mask[2:])]).batches())
    cache = HiddenCache([CachedBatch(b, runner.embed(b.input_ids, b.model_attention_mask)) for b in batches])
    return BlockFeed(runner, 0, cache)


def _block_mse(feed: BlockFeed, reference: list[torch.Tensor]) -> float:
    """Mean over real tokens and channels of the squared difference of block 0's output to ``reference``."""
    total, count = 0.0, 0
    for batch, ref in zip(feed.batches(), reference, strict=True):
        sq = (feed.forward(batch).double() - ref.double()).pow(2).sum(-1)
        total += float(sq[batch.attention_mask].sum())
        count += int(batch.attention_mask.sum()) * ref.shape[-1]
    return total / count


def test_block_loss_scores_the_block_output_of_the_block_feed() -> None:
    dlm = _salient(random_char_model("llada"))
    feed = _block_feed(dlm)
    block = dlm.topology.block(0)
    spec = QuantSpec(3, False, "group", 16)
    reference = [feed.forward(b) for b in feed.batches()]
    # s = 1 for the attn group: q, k, v quantized, the block's output compared on the real tokens
    originals = [lin.weight.detach().clone() for lin in block.attn_inputs]
    with torch.no_grad():
        for lin in block.attn_inputs:
            lin.weight.copy_(fake_quantize_weight(lin.weight, spec))
    expected_baseline = _block_mse(feed, reference)
    with torch.no_grad():
        for lin, w in zip(block.attn_inputs, originals, strict=True):
            lin.weight.copy_(w)

    stats = collect(feed, [block.names["q"]], [ChannelStatsCollector(name="channels")])["channels"]
    means = {n: s.mean_abs for n, s in stats.items()}
    config = AWQConfig(groups=("attn",), loss="block", n_grid=8)
    results = apply_awq(dlm.topology, {}, means, spec, config, blocks=[0], feed=feed)
    found = results["0.attn"]
    assert found.baseline_error == pytest.approx(expected_baseline, rel=1e-9)
    assert found.error <= found.baseline_error
    assert _block_mse(feed, reference) < 1e-10  # candidates restored; the fold keeps the float block


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_qdlm_setting_runs_in_the_pipeline(arch: str) -> None:
    """awq(loss auto, clip) + rtn at W4 with a zero point: one awq row per group, one awq_clip row per
    clipped linear (all but q and k, none ignored), finite quantized logits."""
    dlm = _salient(random_char_model(arch))
    data = load_recipe("awq").with_scheme("W4A16g16").to_dict()
    data["calibration"] = SMALL_CALIBRATION
    data["scheme"]["weights"]["symmetric"] = False
    data["steps"] = [{"method": "awq", "loss": "auto", "clip": True, "max_tokens": 64}, {"method": "rtn"}]
    result = quantize_model(dlm, Recipe.model_validate(data), progress=False)
    clipped = [r.module for r in result.rows if r.method == "awq_clip"]
    assert clipped == [b.names[r] for b in dlm.topology for r in ("v", "o", "gate", "up", "down")]
    assert sum(r.method == "awq" for r in result.rows) == 4 * len(dlm.topology)
    assert all(r.loss >= 0 for r in result.rows if r.method.startswith("awq"))
    ids = torch.randint(4, CHAR_VOCAB, (2, 16), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert bool(torch.isfinite(dlm.logits(ids)).all())


def test_clip_refuses_tensor_granularity() -> None:
    data = load_recipe("awq").to_dict()
    data["scheme"]["weights"] = {"bits": 4, "granularity": "tensor"}
    data["steps"] = [{"method": "awq", "clip": True}, {"method": "rtn"}]
    with pytest.raises(ValidationError, match="granularity 'tensor'"):
        Recipe.model_validate(data)
    data["steps"] = [{"method": "awq"}, {"method": "rtn"}]
    Recipe.model_validate(data)
