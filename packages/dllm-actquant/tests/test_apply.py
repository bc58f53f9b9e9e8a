"""`quantize_activations` on whole models: fake vs kernel paths, static statistics, wrapped linears."""

from __future__ import annotations

import pytest
import torch
from dllm_actquant import (
    ActQuantConfig,
    ActQuantLinear,
    DuQuantConfig,
    OnlineRotation,
    QuaRotConfig,
    SmoothQuantConfig,
    VQuantConfig,
    VQuantOutput,
    apply_duquant,
    apply_quarot,
    apply_smoothquant,
    attach_v_quantizers,
    capture_inputs,
    mark_quantized,
    quantize_activations,
)


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_w8a8_kernel_model_tracks_float(make_model, batches, relerr, arch) -> None:
    dlm = make_model(arch, dtype=torch.float32)
    data = batches(n=2)
    with torch.no_grad():
        ref = [dlm.logits(x) for x in data]
        names = quantize_activations(dlm, ActQuantConfig(bits=8), mode="kernel", weight_bits=8)
        out = [dlm.logits(x) for x in data]
    assert len(names) == 7 * len(dlm.topology)
    assert all(isinstance(dlm.model.get_submodule(n), ActQuantLinear) for n in names)
    assert dlm.topology.head is not None and type(dlm.topology.head) is torch.nn.Linear
    err = max(relerr(o, r) for o, r in zip(out, ref, strict=True))
    assert 0 < err < 0.05


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_rotations_make_a8_more_accurate(make_model, batches, outliers, relerr, arch) -> None:
    """With injected outlier channels, QuaRot and DuQuant cut the per-token A8 (float weights) logit error.

    (o/down weights are halved so the random model is less chaotic and the error reflects the activations.)
    """
    errors = {}
    for method in ("none", "quarot", "duquant"):
        dlm = make_model(arch)
        with torch.no_grad():
            for b in dlm.topology:
                b.o_proj.weight.mul_(0.5)
                b.down_proj.weight.mul_(0.5)
        outliers(dlm, factor=30.0)
        data = batches(n=2, seed=9)
        with torch.no_grad():
            ref = [dlm.logits(x) for x in data]
            if method == "quarot":
                apply_quarot(dlm)
            elif method == "duquant":
                samples = capture_inputs(dlm, data, dlm.topology.linear_names(), max_tokens=128).samples
                apply_duquant(dlm, samples, DuQuantConfig(block_size=32, max_rotation_step=16))
            quantize_activations(dlm, ActQuantConfig(bits=8))
            errors[method] = max(relerr(dlm.logits(x), r) for x, r in zip(data, ref, strict=True))
    assert errors["quarot"] < 0.8 * errors["none"], errors
    assert errors["duquant"] < 0.5 * errors["none"], errors


def test_static_quantization_after_a_rotation(make_model, batches, relerr) -> None:
    """Static per-tensor scales collected at the rotated inputs (weight holders) keep W8A8 close to float."""
    dlm = make_model("dream", dtype=torch.float32)
    data = batches(n=2)
    with torch.no_grad():
        ref = [dlm.logits(x) for x in data]
        stats = capture_inputs(dlm, data, dlm.topology.linear_names()).absmax
        apply_smoothquant(dlm, stats, SmoothQuantConfig(pairs=("attn", "mlp", "down")))
        apply_quarot(dlm, QuaRotConfig(rotate_residual=False, rotate_vo=False))
        targets = dlm.topology.weight_holders()
        assert targets[dlm.topology.blocks[0].names["down"]].endswith(".inner")
        rotated = capture_inputs(dlm, data, list(targets.values())).absmax
        cfg = ActQuantConfig(bits=8, granularity="tensor")
        with pytest.raises(KeyError, match="weight_holders"):
            quantize_activations(dlm, cfg, static={})
        quantize_activations(dlm, cfg, static=rotated, mode="kernel", weight_bits=8)
        down = dlm.model.get_submodule(dlm.topology.blocks[0].names["down"])
        assert isinstance(down, OnlineRotation) and isinstance(down.inner, ActQuantLinear)
        assert dlm.topology.blocks[0].weight_holder("down").endswith(".inner.inner")
        err = max(relerr(dlm.logits(x), r) for x, r in zip(data, ref, strict=True))
    assert err < 0.05


def test_kernel_mode_refuses_weight_quantized_layers(make_model) -> None:
    dlm = make_model("llada")
    mark_quantized(dlm.topology.blocks[0].q_proj, "weights")
    with pytest.raises(ValueError, match="mode='fake'"):
        quantize_activations(dlm, ActQuantConfig(), mode="kernel", weight_bits=8)
    names = quantize_activations(dlm, ActQuantConfig(), roles=("q", "down"), blocks=[0])
    assert names == [dlm.topology.blocks[0].names["q"], dlm.topology.blocks[0].names["down"]]
    with pytest.raises(ValueError, match="unknown linear roles"):
        quantize_activations(dlm, ActQuantConfig(), roles=("qkv",))


def test_v_quantizers_compose_with_activation_quantization(make_model, batches, relerr) -> None:
    """V quantizers wrap the v projection, so kernel-mode activation quantizers go inside them in either
    order: V is quantized after the integer GEMM, and the result does not depend on the order."""
    dlm = make_model("dream", dtype=torch.float32)
    x = batches(n=1)[0]
    vcfg = VQuantConfig(bits=4, granularity="token")
    with torch.no_grad():
        ref = dlm.logits(x)
        v_first = make_model("dream", dtype=torch.float32)
        attach_v_quantizers(v_first, vcfg)
        quantize_activations(v_first, ActQuantConfig(bits=8), mode="kernel", weight_bits=8)
        v_name = v_first.topology.blocks[0].names["v"]
        assert isinstance(v_first.model.get_submodule(v_name), VQuantOutput)
        assert isinstance(v_first.model.get_submodule(f"{v_name}.inner"), ActQuantLinear)
        quantize_activations(dlm, ActQuantConfig(bits=8), mode="kernel", weight_bits=8)
        w8a8 = dlm.logits(x)
        with attach_v_quantizers(dlm, vcfg):
            with_v4 = dlm.logits(x)
        assert torch.equal(v_first.logits(x), with_v4)
    assert relerr(w8a8, ref) < relerr(with_v4, ref)
