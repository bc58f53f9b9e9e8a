"""GPTQ's CPU block kernel (`dllm_kernels.cpu.gptq_block`, used when every group's grid is fixed before the
sweep) against the per-column torch loop it replaces, on ragged shapes.

The two run the same arithmetic; they may differ only where the torch loop's rank-1 update is fused
(``addr_``) and rounds differently, which can flip a code that sits on a rounding boundary. So: the codes
agree almost everywhere, the objective agrees to 1e-3, and the dequantized weight is exactly the values the
kernel's sweep compensated against.
"""

from __future__ import annotations

import pytest
import torch
from dllm_kernels import QuantSpec
from dllm_weightquant import GPTQConfig, layer_objective
from dllm_weightquant import gptq as gptq_module
from dllm_weightquant.gptq import gptq_sweep
from hypothesis import given, settings
from hypothesis import strategies as st


def _layer(out: int, inp: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g)
    x = torch.randn(4 * inp, inp, generator=g) * torch.rand(inp, generator=g).mul(3).exp()
    return w, x.T @ x


@settings(max_examples=25, deadline=None)
@given(
    out=st.integers(1, 40),
    groups=st.integers(1, 5),
    group_size=st.sampled_from([8, 16]),
    bits=st.sampled_from([2, 3, 4, 8]),
    symmetric=st.booleans(),
    granularity=st.sampled_from(["group", "channel", "tensor"]),
    block_size=st.sampled_from([3, 16, 128]),
    scales=st.sampled_from(["static", "mse"]),
    seed=st.integers(0, 2**16),
)
def test_the_block_kernel_matches_the_column_loop(
    out: int,
    groups: int,
    group_size: int,
    bits: int,
    symmetric: bool,
    granularity: str,
    block_size: int,
    scales: str,
    seed: int,
) -> None:
    inp = groups * group_size
    w, h = _layer(out, inp, seed)
    spec = QuantSpec(bits, symmetric, granularity, group_size if granularity == "group" else None)
    config = GPTQConfig(block_size=block_size, scales=scales, actorder="static")
    kernel_q, kernel_values = gptq_sweep(w, h, spec, config)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gptq_module, "_fixed_grid", lambda params, w: None)
        loop_q, _ = gptq_sweep(w, h, spec, config)
    same = (kernel_q.codes == loop_q.codes).float().mean().item()
    assert same >= 0.98, f"only {same:.3f} of the codes agree"
    kernel_obj = layer_objective(w, kernel_q.dequantize(), h)
    loop_obj = layer_objective(w, loop_q.dequantize(), h)
    assert kernel_obj == pytest.approx(loop_obj, rel=1e-3, abs=1e-6)
    assert torch.equal(kernel_q.dequantize(), kernel_values)


def test_the_kernel_runs_only_for_fixed_grids_on_cpu() -> None:
    w, h = _layer(8, 32, 0)
    spec = QuantSpec(4, True, "group", 16)
    calls = []
    original = gptq_module.gptq_block

    def spy(*args: object) -> None:
        calls.append(1)
        original(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gptq_module, "gptq_block", spy)
        gptq_sweep(w, h, spec, GPTQConfig(scales="dynamic"))
        assert not calls
        gptq_sweep(w, h, spec, GPTQConfig(scales="static"))
        assert calls
