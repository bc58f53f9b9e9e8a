"""Backend selection of :mod:`dllm_kernels.dispatch` and its identical behaviour across backends."""

from __future__ import annotations

import os
import subprocess
import sys

import dllm_kernels
import numpy as np
import pytest
import torch
from dllm_kernels import dispatch, ops_cpu
from dllm_kernels import reference as ref


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(dispatch.BACKEND_ENV, raising=False)
    return monkeypatch


def test_auto_picks_the_fast_cpu_gemms_and_numba_elsewhere_for_cpu_tensors(no_env):
    assert dispatch.resolve_backend("auto", [torch.zeros(2), None]) == "cpu"
    assert dispatch.resolve_backend("auto", [torch.zeros(2)], ("numba", "triton")) == "numba"
    x = torch.randn(5, 24)
    for got, want in zip(
        dllm_kernels.quantize_per_token(x, 4), ops_cpu.quantize_per_token(x, 4), strict=True
    ):
        assert (got is None and want is None) or torch.equal(got, want)


def test_env_var_forces_a_backend_and_the_argument_wins(no_env, triton_device):
    no_env.setenv(dispatch.BACKEND_ENV, "triton")
    t = torch.zeros(2, device=triton_device)
    assert dispatch.resolve_backend("auto", [t]) == "triton"
    if triton_device == "cpu":
        assert dispatch.resolve_backend("numba", [t]) == "numba"
        no_env.setenv(dispatch.BACKEND_ENV, "numba")
        assert dispatch.resolve_backend("auto", [t]) == "numba"
        assert dispatch.resolve_backend("triton", [t]) == "triton"


def test_bad_backend_names_raise(no_env):
    with pytest.raises(ValueError, match="backend must be"):
        dispatch.quantize_per_token(torch.randn(2, 8), 8, backend="cuda")
    no_env.setenv(dispatch.BACKEND_ENV, "cutlass")
    with pytest.raises(ValueError, match=dispatch.BACKEND_ENV):
        dispatch.quantize_per_token(torch.randn(2, 8), 8)


def test_device_errors(no_env, triton_device):
    meta = torch.empty(2, 8, device="meta")
    with pytest.raises(ValueError, match="runs on CPU tensors"):
        dispatch.quantize_per_token(meta, 8, backend="numba")
    with pytest.raises(ValueError, match="CUDA"):
        dispatch.quantize_per_token(meta, 8, backend="triton")
    xq = torch.zeros(2, 8, dtype=torch.int8)
    with pytest.raises(ValueError, match="one device"):
        dispatch.int8_gemm(
            xq, torch.ones(2), torch.zeros(3, 8, dtype=torch.int8), torch.ones(3, device="meta")
        )


def test_output_dtypes_agree_across_backends(no_env, triton_device):
    """Both backends return ``x.dtype`` from wna16_gemm and ``out_dtype`` from the integer GEMMs."""
    rng = np.random.default_rng(3)
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    packed = torch.from_numpy(ref.pack(rng.integers(-8, 8, size=(5, 64)).astype(np.int8), 4))
    scale = torch.rand(5, 2, dtype=torch.bfloat16) + 0.5
    xq = torch.from_numpy(rng.integers(-128, 128, size=(3, 64)).astype(np.int8))
    wq = torch.from_numpy(rng.integers(-128, 128, size=(5, 64)).astype(np.int8))
    outs = {}
    for backend, dev in (("numba", "cpu"), ("triton", triton_device)):
        y = dispatch.wna16_gemm(x.to(dev), packed.to(dev), scale.to(dev), None, 4, 32, backend=backend)
        z = dispatch.int8_gemm(
            xq.to(dev), torch.full((3,), 1e-3, device=dev), wq.to(dev), torch.full((5,), 1e-2, device=dev),
            out_dtype=torch.float16, backend=backend,
        )  # fmt: skip
        assert y.dtype == torch.bfloat16 and z.dtype == torch.float16
        outs[backend] = (y.cpu().float(), z.cpu())
    torch.testing.assert_close(outs["triton"][0], outs["numba"][0], rtol=1e-2, atol=1e-2)
    assert torch.equal(outs["triton"][1], outs["numba"][1])


def test_import_and_numba_work_without_triton():
    """With triton unimportable, ``import dllm_kernels`` works, auto picks the CPU GEMMs, Triton raises
    clearly."""
    script = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, dllm_kernels\n"
        "from dllm_kernels import dispatch\n"
        "assert not dispatch.triton_available()\n"
        "assert dispatch.resolve_backend('auto', [torch.zeros(1)]) == 'cpu'\n"
        "try:\n"
        "    dllm_kernels.quantize_per_token(torch.randn(2, 8), 8, backend='triton')\n"
        "except RuntimeError as exc:\n"
        "    assert 'triton' in str(exc)\n"
        "    print('RAISED')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != dispatch.BACKEND_ENV}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "RAISED"
