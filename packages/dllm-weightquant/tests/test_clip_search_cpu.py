"""The CPU clip search (one Numba kernel, `dllm_kernels.cpu.clip_search`) against the torch search it replaces
on CPU (`dllm_weightquant.grid._search_chunk`, still the path of every other device).

Each chosen scale / zero point must be exactly the torch grid's parameters of one tried ratio, and that
ratio's error (computed by the torch path) must be the smallest up to float32 rounding of the sums: the two
searches may only disagree between ratios whose errors tie to float32 precision.
"""

from __future__ import annotations

import torch
from dllm_kernels import torch_grid
from dllm_kernels.cpu.clip_search import clip_search
from dllm_weightquant.grid import ClipSearch, _cell_error, search_params
from hypothesis import given, settings
from hypothesis import strategies as st


def _cells(rows: int, n: int, seed: int, zero_row: bool) -> torch.Tensor:
    x = torch.randn(rows, n, generator=torch.Generator().manual_seed(seed)) ** 3  # heavy tails: clipping pays
    if zero_row:
        x[0] = 0.0
    return x


def _candidate_errors(
    x: torch.Tensor, bits: int, symmetric: bool, clip: ClipSearch
) -> tuple[list[tuple[torch.Tensor, torch.Tensor | None]], torch.Tensor]:
    """Every ratio's torch-grid parameters and the torch path's errors ``[ratios, cells]``."""
    lo, hi = torch.aminmax(x, dim=-1)
    params, errors = [], []
    for p in clip.ratios():
        s, z = torch_grid.scale_zero(lo, hi, bits, symmetric, p)
        params.append((s, z))
        errors.append(_cell_error(torch.empty_like(x), x, s, z, bits, clip.norm))
    return params, torch.stack(errors)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 12),
    n=st.integers(1, 70),
    bits=st.sampled_from([2, 3, 4, 8]),
    symmetric=st.booleans(),
    norm=st.sampled_from([2.0, 2.4]),
    grid=st.sampled_from([5, 20, 100]),
    seed=st.integers(0, 2**16),
    zero_row=st.booleans(),
)
def test_cpu_search_picks_a_best_ratio_of_the_torch_grid(
    rows: int, n: int, bits: int, symmetric: bool, norm: float, grid: int, seed: int, zero_row: bool
) -> None:
    x = _cells(rows, n, seed, zero_row)
    clip = ClipSearch(grid=grid, norm=norm)
    scale, zero = clip_search(x, bits, symmetric, clip.ratios(), clip.norm)
    assert (zero is None) == symmetric
    params, errors = _candidate_errors(x, bits, symmetric, clip)
    best = errors.min(dim=0).values
    for c in range(rows):
        chosen = [
            i
            for i, (s, z) in enumerate(params)
            if s[c] == scale[c] and (z is None or zero is None or z[c] == zero[c])
        ]
        assert chosen, f"cell {c}: scale {scale[c].item()!r} is no tried ratio's torch-grid scale"
        err = min(errors[i, c] for i in chosen)
        assert err <= best[c] * (1 + 1e-5) + 1e-30, f"cell {c}: error {err} vs the best {best[c]}"


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(1, 9),
    n=st.integers(1, 300),
    bits=st.sampled_from([2, 3, 4, 8]),
    symmetric=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_a_single_ratio_gives_the_plain_min_max_grid(
    rows: int, n: int, bits: int, symmetric: bool, seed: int
) -> None:
    x = _cells(rows, n, seed, zero_row=seed % 2 == 0)
    scale, zero = clip_search(x, bits, symmetric, [1.0], 2.0)
    lo, hi = torch.aminmax(x, dim=-1)
    s_ref, z_ref = torch_grid.scale_zero(lo, hi, bits, symmetric)
    assert torch.equal(scale, s_ref)
    assert zero is None if symmetric else torch.equal(zero, z_ref)


def test_search_params_uses_the_kernel_on_cpu_and_keeps_the_cell_shape() -> None:
    x = _cells(6, 64, 3, zero_row=False).reshape(2, 3, 64)
    clip = ClipSearch(grid=20)
    scale, zero = search_params(x, 4, False, clip)
    assert scale.shape == zero.shape == (2, 3)
    flat_scale, flat_zero = clip_search(x.reshape(6, 64), 4, False, clip.ratios(), clip.norm)
    assert torch.equal(scale.reshape(-1), flat_scale) and torch.equal(zero.reshape(-1), flat_zero)
