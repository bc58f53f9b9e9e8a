"""CUDA paths: Triton kernels through dllm_kernels' dispatcher, transforms on a model living on the GPU."""

from __future__ import annotations

import pytest
import torch
from dllm_actquant import (
    ActQuantConfig,
    ActQuantLinear,
    DuQuantConfig,
    StaticActParams,
    VQuantConfig,
    VQuantParams,
    apply_duquant,
    apply_quarot,
    apply_smoothquant,
    capture_inputs,
    fake_quantize_activation,
    fake_quantize_v,
    quantize_activations,
)

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("wbits,abits", [(8, 8), (4, 8), (4, 4)])
def test_kernel_mode_on_cuda_matches_cpu(wbits: int, abits: int) -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 128)
    x = torch.randn(64, 256)
    cfg = ActQuantConfig(bits=abits)
    with torch.no_grad():
        cpu = ActQuantLinear(lin, cfg, mode="kernel", weight_bits=wbits)(x)
        gpu = ActQuantLinear(lin.cuda(), cfg, mode="kernel", weight_bits=wbits)(x.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("symmetric", [True, False])
def test_static_and_v_quantizers_on_cuda_equal_the_cpu_result(symmetric: bool) -> None:
    """The torch grid gives the same bits on CUDA: static activation and V fake quantization."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 256, generator=g) * 3
    cfg = ActQuantConfig(bits=4, symmetric=symmetric, granularity="tensor", clip_ratio=0.9)
    params = StaticActParams.from_minmax(float(x.min()), float(x.max()), cfg)
    assert torch.equal(
        fake_quantize_activation(x.cuda(), cfg, params).cpu(), fake_quantize_activation(x, cfg, params)
    )
    v = torch.randn(2, 16, 4 * 32, generator=g).to(torch.bfloat16)
    alpha = torch.tensor([1.0, 0.9, 0.75, 0.5])
    lo, hi = v.float().reshape(-1, 4, 32).amin(0), v.float().reshape(-1, 4, 32).amax(0)
    cases = {
        "token": VQuantParams(alpha=alpha),
        "head": VQuantParams(alpha=alpha, lo=lo.amin(1), hi=hi.amax(1)),
        "channel": VQuantParams(alpha=alpha, lo=lo, hi=hi),
    }
    for granularity, vparams in cases.items():
        vcfg = VQuantConfig(bits=3, symmetric=symmetric, granularity=granularity)
        want = fake_quantize_v(v, vparams, vcfg, 4)
        assert torch.equal(fake_quantize_v(v.cuda(), vparams, vcfg, 4).cpu(), want), granularity


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_transforms_on_a_cuda_model(make_model, batches, relerr, arch) -> None:
    data = [x.cuda() for x in batches(n=2)]
    for method in ("smoothquant", "quarot", "duquant"):
        dlm = make_model(arch, dtype=torch.float32).to("cuda")
        with torch.no_grad():
            ref = [dlm.logits(x) for x in data]
            cap = capture_inputs(dlm, data, dlm.topology.linear_names(), max_tokens=64)
            if method == "smoothquant":
                apply_smoothquant(dlm, cap.absmax)
            elif method == "quarot":
                apply_quarot(dlm)
            else:
                apply_duquant(dlm, cap.samples, DuQuantConfig(block_size=32, max_rotation_step=8))
            assert max(relerr(dlm.logits(x), r) for x, r in zip(data, ref, strict=True)) < 1e-3, method
            quantize_activations(dlm, ActQuantConfig(bits=8), mode="kernel", weight_bits=8)
            assert max(relerr(dlm.logits(x), r) for x, r in zip(data, ref, strict=True)) < 0.1, method
