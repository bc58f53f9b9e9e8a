"""Online input rotations: orthogonal maps applied to a Linear's input at run time.

A rotation ``M`` (orthogonal, ``[n, n]``) is invisible to the float model when the linear's weight absorbs
it: ``y = x W^T = (x M)(W M)^T``. `fold_rotation` rewrites ``W <- W M`` (float64, cast back) and wraps the
linear in `OnlineRotation`, which computes ``inner(x M)``. Two rotations exist:

* `HadamardRotation`: ``x @ hadamard_matrix(n)`` through ``dllm_kernels.hadamard_transform`` (QuaRot's R4
  on the down-projection input; Kronecker sizes such as 768 = 12 * 64 included). When the wrapped module is
  an `ActQuantLinear` on the integer kernel path, rotation and quantization run as one fused
  ``dllm_kernels.hadamard_quantize_per_token`` call.
* `BlockRotation`: DuQuant's sequence of block-diagonal rotations ``[nb, b, b]`` and channel permutations.
* `HeadRotation`: ``x @ (C kron I_Dh)`` for a ``[H, H]`` orthogonal ``C``, mixing attention heads channel by
  channel (QuaRot's online cross-head Hadamard on the o-projection input).
"""

from __future__ import annotations

import dllm_kernels
import torch
from torch import Tensor, nn

from dllm_actquant.hadamard import check_hadamard_size

__all__ = [
    "BlockRotation",
    "HadamardRotation",
    "HeadRotation",
    "InputRotation",
    "OnlineHadamard",
    "OnlineRotation",
    "RotationAware",
    "fold_rotation",
    "wrap_rotation",
]


class InputRotation(nn.Module):
    """An orthogonal map along the last dim: ``forward(x [..., n]) = x @ M``."""

    size: int

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply_rows(self, w: Tensor) -> Tensor:
        """``w @ M`` for a float64 ``w [rows, n]`` (exact float64 arithmetic, used to fold into weights)."""
        return self.forward(w.to(torch.float64))

    def matrix(self) -> Tensor:
        """The dense ``[n, n]`` float64 matrix ``M`` (for tests and small models)."""
        return self.apply_rows(torch.eye(self.size, dtype=torch.float64))


class HadamardRotation(InputRotation):
    """``x @ H_n`` with ``H_n = dllm_kernels.hadamard_matrix(n)`` (orthonormal)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        check_hadamard_size(size, "online Hadamard rotation width")
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.size:
            raise ValueError(f"HadamardRotation({self.size}) got an input with last dim {x.shape[-1]}")
        return dllm_kernels.hadamard_transform(x)

    def apply_rows(self, w: Tensor) -> Tensor:
        """``w @ H`` in float64, computed on CPU (the GPU kernels take at most float32)."""
        return dllm_kernels.hadamard_transform(w.detach().to(device="cpu", dtype=torch.float64)).to(w.device)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class BlockRotation(InputRotation):
    """A sequence of steps, each a block-diagonal rotation or a channel permutation (DuQuant).

    Args:
        steps: each a float ``[nb, b, b]`` stack of orthogonal blocks (``x.view(..., nb, b)`` block ``i`` is
            multiplied by ``blocks[i]`` on the right) or an int64 ``[n]`` permutation (``x[..., perm]``).
        dtype: storage dtype of the rotation blocks (float64 keeps the fold exact; the forward computes in
            at least float32 and casts the blocks to the compute dtype).
    """

    def __init__(self, steps: list[Tensor], dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if not steps:
            raise ValueError("BlockRotation needs at least one step")
        self.kinds: list[str] = []
        size = None
        for i, step in enumerate(steps):
            if step.dtype == torch.int64:
                n = step.numel()
                if step.dim() != 1 or not torch.equal(
                    step.sort().values, torch.arange(n, device=step.device)
                ):
                    raise ValueError(f"step {i}: an int64 step must be a permutation of range({n})")
                self.register_buffer(f"step{i}", step.clone())
                self.kinds.append("perm")
            else:
                if step.dim() != 3 or step.shape[1] != step.shape[2]:
                    raise ValueError(f"step {i}: rotation blocks must be [nb, b, b], got {tuple(step.shape)}")
                n = step.shape[0] * step.shape[1]
                self.register_buffer(f"step{i}", step.to(dtype).clone())
                self.kinds.append("rot")
            if size is not None and n != size:
                raise ValueError(f"step {i} acts on {n} channels, earlier steps on {size}")
            size = n
        self.size = int(size)

    def steps(self) -> list[Tensor]:
        """The step tensors in order."""
        return [getattr(self, f"step{i}") for i in range(len(self.kinds))]

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.size:
            raise ValueError(f"BlockRotation({self.size}) got an input with last dim {x.shape[-1]}")
        compute = torch.promote_types(x.dtype, torch.float32)
        y = x.to(compute)
        lead = y.shape[:-1]
        for kind, step in zip(self.kinds, self.steps(), strict=True):
            if kind == "perm":
                y = y[..., step.to(y.device)]
            else:
                nb, b, _ = step.shape
                y = torch.einsum(
                    "...ib,ibc->...ic", y.reshape(*lead, nb, b), step.to(device=y.device, dtype=compute)
                ).reshape(*lead, nb * b)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"size={self.size}, steps={self.kinds}"


class HeadRotation(InputRotation):
    """``x @ (C kron I_Dh)`` on ``x [..., H * Dh]``: channel ``d`` of head ``g`` of the output is
    ``sum_h x[h, d] C[h, g]``.

    Args:
        matrix: orthogonal ``[H, H]`` (stored float64 as the buffer ``mixing``; the forward computes in at
            least float32).
        head_dim: ``Dh``, the channels of one head.
    """

    def __init__(self, matrix: Tensor, head_dim: int) -> None:
        super().__init__()
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"HeadRotation needs a square [H, H] matrix, got {tuple(matrix.shape)}")
        if not isinstance(head_dim, int) or head_dim < 1:
            raise ValueError(f"HeadRotation head_dim must be a positive int, got {head_dim!r}")
        eye = torch.eye(matrix.shape[0], dtype=torch.float64, device=matrix.device)
        c = matrix.detach().to(torch.float64)
        if not torch.allclose(c @ c.T, eye, atol=1e-6):
            raise ValueError("HeadRotation matrix is not orthogonal (C @ C^T != I)")
        self.register_buffer("mixing", c.clone())
        self.heads = int(matrix.shape[0])
        self.head_dim = head_dim
        self.size = self.heads * head_dim

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.size:
            raise ValueError(
                f"HeadRotation({self.heads} x {self.head_dim}) got an input with last dim {x.shape[-1]}"
            )
        compute = torch.promote_types(x.dtype, torch.float32)
        y = x.to(compute).reshape(*x.shape[:-1], self.heads, self.head_dim)
        y = torch.einsum("...hd,hg->...gd", y, self.mixing.to(device=y.device, dtype=compute))
        return y.reshape(x.shape).to(x.dtype)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, head_dim={self.head_dim}"


class RotationAware(nn.Module):
    """A module whose ``forward(x, rotation=None)`` can take over an online rotation (e.g. to fuse it)."""

    def forward(self, x: Tensor, rotation: InputRotation | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class OnlineRotation(nn.Module):
    """``inner(rotation(x))``: a wrapped layer whose weight absorbed the rotation (see `fold_rotation`)."""

    def __init__(self, inner: nn.Module, rotation: InputRotation) -> None:
        super().__init__()
        self.inner = inner
        self.rotation = rotation

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.inner, RotationAware):
            return self.inner(x, rotation=self.rotation)
        return self.inner(self.rotation(x))


class OnlineHadamard(OnlineRotation):
    """`OnlineRotation` with a `HadamardRotation` of the inner layer's input width (QuaRot's R4)."""

    def __init__(self, inner: nn.Module, size: int | None = None) -> None:
        n = size if size is not None else getattr(inner, "in_features", None)
        if n is None:
            raise ValueError("OnlineHadamard needs size= when the inner module has no in_features")
        super().__init__(inner, HadamardRotation(int(n)))


def fold_rotation(linear: nn.Linear, rotation: InputRotation) -> OnlineRotation:
    """Rewrite ``linear.weight <- W M`` in float64 and return the wrapper computing ``linear(x M)``.

    The pair computes exactly what ``linear`` computed before, up to rounding. A `HadamardRotation` gives
    an `OnlineHadamard`.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"fold_rotation needs an nn.Linear, got {type(linear).__name__}")
    if linear.in_features != rotation.size:
        raise ValueError(
            f"rotation of size {rotation.size} cannot act on a linear with {linear.in_features} inputs"
        )
    rotation = rotation.to(linear.weight.device)
    with torch.no_grad():
        w = rotation.apply_rows(linear.weight.detach().to(torch.float64))
        linear.weight.copy_(w.to(linear.weight.dtype))
    return wrap_rotation(linear, rotation)


def wrap_rotation(inner: nn.Module, rotation: InputRotation) -> OnlineRotation:
    """The wrapper computing ``inner(x M)`` for ``rotation`` M: an `OnlineHadamard` for a
    `HadamardRotation`, else an `OnlineRotation` (``rotation`` itself is held, so it may be shared)."""
    if isinstance(rotation, HadamardRotation):
        wrapper = OnlineHadamard(inner, rotation.size)
        wrapper.rotation = rotation
        return wrapper
    return OnlineRotation(inner, rotation)
