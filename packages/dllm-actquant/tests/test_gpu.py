"""CUDA paths: Triton kernels through dllm_kernels' dispatcher, transforms on a model living on the GPU."""

from __future__ import annotations

import pytest
import torch
from dllm_actquant import (
    ActQuantConfig,
    ActQuantLinear,
    DuQuantConfig,
    apply_duquant,
    apply_quarot,
    apply_smoothquant,
    capture_inputs,
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
