"""DuQuant: smoothing, outlier-driven block rotations, zigzag permutation and a second rotation.

For each activation site (the shared input of q/k/v, the o input, the shared input of gate/up, the down
input) with calibration samples ``X [N, C]``:

1. **Smoothing** (optional, SmoothQuant's ``s_j = max|X_j|^alpha / max|W_j|^(1-alpha)``) folded through the
   topology: into the RMSNorm for q/k/v and gate/up, into v for o (under grouped-query attention on the kv
   channels, shared by each group's query heads: `dllm_actquant.smoothquant.pair_scales`) and into up for
   down.
2. **Block rotation**: channels are split into blocks of ``b`` (``block_size``, or the largest divisor of
   the width not above it). In each block, a greedy loop (at most ``max_rotation_step`` steps) finds the
   channel holding the block's largest ``|x|`` and applies ``E_c B E_c``, where ``B`` is orthogonal with a
   uniform first row (``diag(1, Q') Householder(e_0 -> 1/sqrt(b))``, ``Q'`` random orthogonal) and ``E_c``
   swaps channels 0 and c: the outlier's energy is spread evenly over the block. The product of the
   steps with the lowest peak ``max |x|`` is kept.
3. **Zigzag permutation**: channels sorted by their rotated ``max |x|`` are dealt to the blocks in the order
   0, 1, ..., nb-1, nb-1, ..., 0, 0, 1, ..., so every block gets a similar share of the large channels.
4. **Second rotation** of the permuted blocks (steps 2-3 repeat ``permutation_times`` times, then a final
   rotation).

The rotation ``M`` (block-diagonal, permutation, block-diagonal) is orthogonal, so the consumers' weights
absorb it (``W <- W M``) and the input is rotated online by an `OnlineRotation` wrapper with a
`BlockRotation` (the permutation sits between two rotations and cannot be folded into any neighbour).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from dllm_calib import MethodConfig
from dllm_sampler import BlockTopology, DiffusionLM, Topology
from torch import Tensor, nn

from dllm_actquant.modules import as_topology, check_transformable, replace_module
from dllm_actquant.rotation import BlockRotation, fold_rotation
from dllm_actquant.smoothquant import fold_pair_scale, input_scale, pair_scales

__all__ = [
    "DUQUANT_SITES",
    "DuQuantConfig",
    "DuQuantResult",
    "apply_duquant",
    "duquant_rotation",
    "effective_block_size",
    "greedy_block_rotation",
    "zigzag_permutation",
]

DUQUANT_SITES: dict[str, tuple[str, ...]] = {
    "qkv": ("q", "k", "v"),
    "o": ("o",),
    "gate_up": ("gate", "up"),
    "down": ("down",),
}
"""Site name -> the roles of the linears that read that activation."""

_SMOOTH_PAIR = {"qkv": "attn", "o": "vo", "gate_up": "mlp", "down": "down"}
"""Site name -> the SmoothQuant pair whose scales smooth it."""


@dataclass(frozen=True)
class DuQuantConfig(MethodConfig):
    """DuQuant settings (defaults: QDLM's ``--block_size 128 --max_rotation_step 256 --smooth --alpha 0.5``).

    Attributes:
        block_size: rotation block size; the largest divisor of each width not above it is used.
        max_rotation_step: greedy steps per block and rotation.
        permutation_times: rounds of (rotation, zigzag permutation) before the final rotation; 0 gives a
            single block rotation.
        smooth: fold SmoothQuant scales first.
        alpha: the smoothing strength.
        sites: which activations to transform (subset of ``DUQUANT_SITES``).
        seed: seed of the random orthogonal factors.
    """

    block_size: int = 128
    max_rotation_step: int = 256
    permutation_times: int = 1
    smooth: bool = True
    alpha: float = 0.5
    sites: tuple[str, ...] = ("qkv", "o", "gate_up", "down")
    seed: int = 0

    def validate(self) -> None:
        for name in ("block_size", "max_rotation_step", "seed"):
            v = getattr(self, name)
            low = 1 if name == "block_size" else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"DuQuantConfig.{name} must be an int >= {low}, got {v!r}")
        if (
            isinstance(self.permutation_times, bool)
            or not isinstance(self.permutation_times, int)
            or self.permutation_times < 0
        ):
            raise ValueError(
                f"DuQuantConfig.permutation_times must be an int >= 0, got {self.permutation_times!r}"
            )
        if not (isinstance(self.alpha, int | float) and 0.0 <= self.alpha <= 1.0):
            raise ValueError(f"DuQuantConfig.alpha must be in [0, 1], got {self.alpha!r}")
        if not isinstance(self.smooth, bool):
            raise ValueError(f"DuQuantConfig.smooth must be a bool, got {self.smooth!r}")
        bad = [s for s in self.sites if s not in DUQUANT_SITES]
        if bad or not self.sites or len(set(self.sites)) != len(self.sites):
            raise ValueError(
                f"DuQuantConfig.sites must be distinct names from {list(DUQUANT_SITES)}, got {self.sites!r}"
            )


@dataclass
class DuQuantResult:
    """Per site label (``"<block index>.<site>"``): the online `BlockRotation` and the smoothing scales."""

    rotations: dict[str, BlockRotation] = field(default_factory=dict)
    scales: dict[str, Tensor] = field(default_factory=dict)


def effective_block_size(width: int, block_size: int) -> int:
    """The largest divisor of ``width`` that is at most ``block_size``."""
    for b in range(min(block_size, width), 0, -1):
        if width % b == 0:
            return b
    raise ValueError(f"width must be positive, got {width}")  # pragma: no cover - width >= 1 always divides


def _spreading_base(b: int, gen: torch.Generator) -> Tensor:
    """Orthogonal ``[b, b]`` float64 with first row ``1/sqrt(b)`` (Householder) times a random rotation."""
    if b == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    u = torch.full((b,), b**-0.5, dtype=torch.float64)
    v = -u
    v[0] += 1.0
    house = torch.eye(b, dtype=torch.float64) - 2.0 * torch.outer(v, v) / v.dot(v)
    q, r = torch.linalg.qr(torch.randn(b - 1, b - 1, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    mix = torch.eye(b, dtype=torch.float64)
    mix[1:, 1:] = q
    return mix @ house


def greedy_block_rotation(x: Tensor, base: Tensor, max_steps: int) -> Tensor:
    """Orthogonal ``[b, b]`` for one block's samples ``x [N, b]``: the greedy product with the lowest peak."""
    b = x.shape[1]
    cur = x.to(torch.float64)
    rot = torch.eye(b, dtype=torch.float64)
    best, best_peak = rot, float(cur.abs().max())
    idx = torch.arange(b)
    for _ in range(max_steps):
        c = int(cur.abs().amax(0).argmax())
        perm = idx.clone()
        perm[0], perm[c] = c, 0
        step = base[perm][:, perm]
        cur = cur @ step
        rot = rot @ step
        peak = float(cur.abs().max())
        if peak < best_peak:
            best, best_peak = rot, peak
    return best


def zigzag_permutation(x: Tensor, block: int) -> Tensor:
    """int64 ``[C]`` permutation dealing channels (sorted by ``max |x|``) to the blocks in zigzag order."""
    c = x.shape[1]
    nb = c // block
    order = torch.argsort(x.abs().amax(0), descending=True, stable=True).tolist()
    slots: list[list[int]] = [[] for _ in range(nb)]
    pattern = list(range(nb)) + list(range(nb - 1, -1, -1))
    for i, ch in enumerate(order):
        slots[pattern[i % len(pattern)]].append(ch)
    return torch.tensor([ch for slot in slots for ch in slot], dtype=torch.int64)


def duquant_rotation(x: Tensor, config: DuQuantConfig, gen: torch.Generator) -> list[Tensor]:
    """DuQuant steps (rotation blocks ``[nb, b, b]``, permutations ``[C]``) for samples ``x [N, C]``."""
    n, c = x.shape
    if n == 0:
        raise ValueError("DuQuant needs at least one calibration token per site")
    b = effective_block_size(c, config.block_size)
    base = _spreading_base(b, gen)
    cur = x.to(torch.float64)
    steps: list[Tensor] = []
    for round_ in range(config.permutation_times + 1):
        blocks = cur.view(n, c // b, b)
        rots = torch.stack(
            [greedy_block_rotation(blocks[:, i], base, config.max_rotation_step) for i in range(c // b)]
        )
        cur = torch.einsum("nib,ibc->nic", blocks, rots).reshape(n, c)
        steps.append(rots)
        if round_ < config.permutation_times:
            perm = zigzag_permutation(cur, b)
            cur = cur[:, perm]
            steps.append(perm)
    return steps


def _samples(samples: Mapping[str, Tensor], b: BlockTopology, roles: tuple[str, ...], site: str) -> Tensor:
    for role in roles:
        if b.names[role] in samples:
            return samples[b.names[role]].detach().to(torch.float64).cpu()
    raise KeyError(
        f"DuQuant site {site!r} of block {b.index} needs input samples of one of "
        f"{[b.names[r] for r in roles]}; "
        "capture them with dllm_actquant.capture_inputs"
    )


def _smooth(topology: Topology, b: BlockTopology, site: str, absmax: Tensor, alpha: float) -> Tensor:
    """Fold the smoothing scales of ``site`` and return them (on the producer's channels: ``[K * Dh]`` for
    the o site)."""
    s = pair_scales(b, _SMOOTH_PAIR[site], absmax, alpha)
    fold_pair_scale(topology, b, _SMOOTH_PAIR[site], s)
    return s


def apply_duquant(
    model: DiffusionLM | Topology | nn.Module,
    samples: Mapping[str, Tensor],
    config: DuQuantConfig | None = None,
    act_absmax: Mapping[str, Any] | None = None,
) -> DuQuantResult:
    """Apply DuQuant to every block of ``model`` in place (see module docstring).

    Args:
        model: a ``DiffusionLM``, ``Topology`` or model module (float, not yet quantized or wrapped).
        samples: linear name -> input samples ``[N, C]`` of the float model (``capture_inputs(...).samples``);
            one consumer per site suffices (e.g. the q_proj name for the q/k/v site).
        config: the settings.
        act_absmax: optional exact per-channel absmax for the smoothing (default: the samples' absmax).

    The float model's outputs are unchanged up to rounding; the online rotations compute in at least
    float32 (float64 for a float64 model).
    """
    config = config or DuQuantConfig()
    topology = as_topology(model)
    check_transformable(topology, "DuQuant")
    gen = torch.Generator().manual_seed(config.seed)
    result = DuQuantResult()
    plan: list[tuple[BlockTopology, str, Tensor, Tensor | None]] = []
    for b in topology:
        for site in config.sites:
            roles = DUQUANT_SITES[site]
            x = _samples(samples, b, roles, site)
            amax = None
            if config.smooth:
                names = [b.names[r] for r in roles]
                stats = next((act_absmax[n] for n in names if act_absmax and n in act_absmax), None)
                amax = x.abs().amax(0) if stats is None else getattr(stats, "absmax", stats)
            plan.append((b, site, x, amax))
    # all smoothing first (it edits the plain linears), norm-fed sites before v -> o and up -> down
    order = {"qkv": 0, "gate_up": 1, "o": 2, "down": 3}
    smoothed: dict[str, Tensor] = {}
    for b, site, x, amax in sorted(plan, key=lambda p: (p[0].index, order[p[1]])):
        label = f"{b.index}.{site}"
        if amax is None:
            smoothed[label] = x
            continue
        s = _smooth(topology, b, site, amax, config.alpha)
        result.scales[label] = s
        smoothed[label] = x / input_scale(b, _SMOOTH_PAIR[site], s)
    for b, site, _, _ in plan:
        label = f"{b.index}.{site}"
        rotation = BlockRotation(duquant_rotation(smoothed[label], config, gen))
        for role in DUQUANT_SITES[site]:
            replace_module(topology.model, b.names[role], fold_rotation(b.module(role), rotation))
        result.rotations[label] = rotation
    return result
