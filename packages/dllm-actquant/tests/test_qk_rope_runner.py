"""`QKQuant.rope_runner`: RoPE and the Q/K quantization in one CPU pass, the numbers of the separate steps
bit for bit, used by the models' attention when it can serve the call and declining otherwise."""

from __future__ import annotations

import pytest
import torch
from dllm_actquant import AttnQuantConfig, QKHadamard, QKQuant, attach_attention_quantizers
from dllm_kernels.dispatch import BACKEND_ENV
from dllm_sampler.models.layers import QKSite, apply_rope, rope_cos_sin


def _inputs(batch: int = 2, length: int = 6, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(0)
    y = torch.randn(batch, length, 4 * 8 + 2 * 8 + 2 * 8, generator=g).to(dtype) * 3
    q = y[..., :32].view(batch, length, 4, 8).transpose(1, 2)  # column blocks of a fused q/k/v output
    k = y[..., 32:48].view(batch, length, 2, 8).transpose(1, 2)
    positions = torch.arange(length).expand(batch, length)
    cos, sin = rope_cos_sin(positions, 8, 10000.0, torch.float32)
    return q, k, cos.to(dtype), sin.to(dtype)


@pytest.mark.parametrize("per_head", [True, False])
@pytest.mark.parametrize(("bits", "symmetric"), [(8, True), (4, False)])
def test_runner_gives_rope_then_forward_bit_for_bit(per_head, bits, symmetric) -> None:
    q, k, cos, sin = _inputs()
    site = QKQuant(
        QKSite(), AttnQuantConfig(bits=bits, symmetric=symmetric, per_head=per_head, clip_ratio=0.9)
    )
    got = site.rope_runner(q, k, cos, sin)
    want = site(apply_rope(q, cos, sin), apply_rope(k, cos, sin))
    assert got is not None
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and torch.equal(a, b)


def _declines(site: torch.nn.Module, *tensors: torch.Tensor) -> bool:
    return site.rope_runner(*tensors) is None


def test_runner_declines_what_it_cannot_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, cos, sin = _inputs()
    config = AttnQuantConfig(bits=8)
    site = QKQuant(QKSite(), config)
    assert not _declines(site, q, k, cos, sin)
    assert _declines(site, *_inputs(dtype=torch.bfloat16))  # float32 only
    assert _declines(site, q.requires_grad_(), k, cos, sin)  # gradients go through torch
    q.requires_grad_(False)
    assert _declines(QKQuant(QKSite(), AttnQuantConfig(bits=8, sites=("k", "v"))), q, k, cos, sin)
    assert _declines(QKQuant(QKHadamard(QKSite(), 8), config), q, k, cos, sin)  # R3 sits between
    handle = site.inner.register_forward_hook(lambda *a: None)  # a hook must see its call
    assert _declines(site, q, k, cos, sin)
    handle.remove()
    monkeypatch.setenv(BACKEND_ENV, "numba")  # the references everywhere
    assert _declines(site, q, k, cos, sin)


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_models_use_the_runner_with_the_logits_of_the_separate_steps(
    make_model, batches, arch, monkeypatch: pytest.MonkeyPatch
) -> None:
    dlm = make_model(arch, dtype=torch.float32)
    attach_attention_quantizers(dlm, AttnQuantConfig(bits=4, symmetric=False))
    x = batches(n=1)[0]
    served = []
    runner = QKQuant.rope_runner

    def spy(self, *args):
        out = runner(self, *args)
        served.append(out is not None)
        return out

    monkeypatch.setattr(QKQuant, "rope_runner", spy)
    with torch.no_grad():
        fused = dlm.logits(x)
        monkeypatch.setattr(QKQuant, "rope_runner", lambda self, *args: None)
        separate = dlm.logits(x)
    assert served == [True] * len(dlm.topology)
    assert torch.equal(fused, separate)
