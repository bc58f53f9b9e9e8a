"""``QuantizedWeight``: a Linear weight on a uniform integer grid, stored packed.

Layout (the in-memory form of compressed-tensors ``pack-quantized``, see ``FORMAT.md``):

* ``packed`` int32 ``[out, ceil(in * bits / 32)]``: codes packed along the input dim by
  ``dllm_kernels.pack`` (symmetric codes stored offset-binary ``q + 2^(b-1)``, asymmetric ones as is);
* ``scale`` float32 ``[out, n_groups]`` (``[out, 1]`` per channel, ``[1]`` per tensor);
* ``zero`` int32 ``[out, n_groups]`` unsigned zero points in ``[0, 2^b - 1]`` (asymmetric), else None;
* ``g_idx`` int32 ``[in]`` or None: the scale group of every input column. None means contiguous groups
  (``column // group_size``), which is what every quantizer here writes, act-order included (static
  act-order keeps groups in column order; see ``gptq.py``). A ``g_idx`` is only carried through for
  checkpoints written that way by other tools (compressed-tensors ``actorder="group"``).

Dequantization: ``W[o, c] = float32(code[o, c] - zero[o, g(c)]) * scale[o, g(c)]`` (zero 0 if symmetric),
the convention of ``dllm_kernels.dequantize`` and of compressed-tensors' decompressor.
"""

from __future__ import annotations

from dataclasses import dataclass

import dllm_kernels
import torch
from dllm_kernels import QuantSpec, torch_grid
from torch import Tensor

__all__ = ["QuantizedWeight"]


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    """A quantized ``[out, in]`` weight (CPU tensors); build it with :meth:`from_codes`.

    Attributes:
        packed: int32 ``[out, ceil(in * bits / 32)]``.
        scale: float32 ``[out, n_groups]``, or ``[1]`` for ``granularity="tensor"``.
        zero: int32 unsigned zero points shaped like ``scale`` (asymmetric spec), else None.
        spec: the number format (integer, granularity channel / group / tensor).
        shape: ``(out, in)``.
        g_idx: int32 ``[in]`` group of each input column, or None for contiguous groups.
    """

    packed: Tensor
    scale: Tensor
    zero: Tensor | None
    spec: QuantSpec
    shape: tuple[int, int]
    g_idx: Tensor | None = None

    def __post_init__(self) -> None:
        out, inp = self.shape
        spec = self.spec
        if spec.is_fp8 or spec.granularity == "token":
            raise ValueError(
                f"QuantizedWeight needs an integer weight spec (channel/group/tensor), got {spec}"
            )
        words = (inp * spec.bits + 31) // 32
        if self.packed.dtype != torch.int32 or tuple(self.packed.shape) != (out, words):
            raise ValueError(
                f"packed must be int32 [{out}, {words}] for shape {self.shape} at {spec.bits} bits, got "
                f"{self.packed.dtype} {list(self.packed.shape)}"
            )
        want = self.scale_shape(spec, out, inp)
        if self.scale.dtype != torch.float32 or tuple(self.scale.shape) != want:
            raise ValueError(
                f"scale must be float32 {list(want)}, got {self.scale.dtype} {list(self.scale.shape)}"
            )
        if spec.symmetric != (self.zero is None):
            raise ValueError(
                "zero must be None for a symmetric spec and an int32 tensor for an asymmetric one"
            )
        if self.zero is not None and (self.zero.dtype != torch.int32 or tuple(self.zero.shape) != want):
            raise ValueError(
                f"zero must be int32 {list(want)}, got {self.zero.dtype} {list(self.zero.shape)}"
            )
        if self.g_idx is not None:
            n_groups = want[-1] if spec.granularity == "group" else 1
            g = self.g_idx
            if (
                g.dtype != torch.int32
                or tuple(g.shape) != (inp,)
                or int(g.min()) < 0
                or int(g.max()) >= n_groups
            ):
                raise ValueError(
                    f"g_idx must be int32 [{inp}] with values in [0, {n_groups}), got {g.dtype} "
                    f"{list(g.shape)}"
                )

    @staticmethod
    def scale_shape(spec: QuantSpec, out: int, inp: int) -> tuple[int, ...]:
        """Shape of ``scale`` for a ``[out, inp]`` weight under ``spec``."""
        if spec.granularity == "tensor":
            return (1,)
        if spec.granularity == "group":
            assert spec.group_size is not None
            return (out, inp // spec.group_size)
        return (out, 1)

    @classmethod
    def from_codes(
        cls,
        codes: Tensor,
        scale: Tensor,
        zero: Tensor | None,
        spec: QuantSpec,
        g_idx: Tensor | None = None,
    ) -> QuantizedWeight:
        """Pack codes ``[out, in]`` (int8 symmetric / uint8 asymmetric) into a ``QuantizedWeight``."""
        codes = codes.detach().cpu()
        if codes.dim() != 2:
            raise ValueError(f"codes must be 2-D [out, in], got shape {tuple(codes.shape)}")
        return cls(
            packed=dllm_kernels.pack(codes, spec.bits),
            scale=scale.detach().cpu().float().contiguous(),
            zero=None if zero is None else zero.detach().cpu().to(torch.int32).contiguous(),
            spec=spec,
            shape=(int(codes.shape[0]), int(codes.shape[1])),
            g_idx=None if g_idx is None else g_idx.detach().cpu().to(torch.int32).contiguous(),
        )

    @property
    def out_features(self) -> int:
        return self.shape[0]

    @property
    def in_features(self) -> int:
        return self.shape[1]

    @property
    def codes(self) -> Tensor:
        """Unpacked codes ``[out, in]``: int8 (symmetric) or uint8 (asymmetric)."""
        return dllm_kernels.unpack(self.packed, self.spec.bits, self.in_features, self.spec.symmetric)

    def column_groups(self) -> Tensor:
        """int64 ``[in]``: the scale column used by each input column."""
        if self.g_idx is not None:
            return self.g_idx.long()
        if self.spec.granularity == "group":
            assert self.spec.group_size is not None
            return torch.arange(self.in_features) // self.spec.group_size
        return torch.zeros(self.in_features, dtype=torch.long)

    def dequantize(self) -> Tensor:
        """float32 ``[out, in]``: ``float32(code - zero) * scale`` per element."""
        out = self.out_features
        scale = self.scale.reshape(1, 1).expand(out, 1) if self.spec.granularity == "tensor" else self.scale
        zero = self.zero
        if zero is not None and self.spec.granularity == "tensor":
            zero = zero.reshape(1, 1).expand(out, 1)
        codes = self.codes
        if self.g_idx is None:  # contiguous groups: broadcast each group's scale instead of gathering it
            cells = codes.reshape(out, scale.shape[1], -1)
            values = torch_grid.decode(cells, scale[:, :, None], None if zero is None else zero[:, :, None])
            return values.reshape(out, -1)
        groups = self.column_groups()
        return torch_grid.decode(codes, scale[:, groups], None if zero is None else zero[:, groups])

    def kernel_layout(self) -> tuple[Tensor, Tensor, Tensor | None, int | None, Tensor | None]:
        """Arguments for ``dllm_kernels.wna16_gemm``: ``(packed, scale [out, G'], zero, group_size, perm)``.

        Contiguous groups need no permutation (``perm`` None). With a ``g_idx`` the columns are sorted by
        group (``perm``, int64 ``[in]``): the GEMM then runs on ``x[:, perm]`` against codes packed in that
        order, which have contiguous groups.
        """
        out = self.out_features
        scale = (
            self.scale.reshape(1, 1).expand(out, 1).contiguous()
            if self.spec.granularity == "tensor"
            else self.scale
        )
        zero = self.zero
        if zero is not None and self.spec.granularity == "tensor":
            zero = zero.reshape(1, 1).expand(out, 1).contiguous()
        group_size = self.spec.group_size if self.spec.granularity == "group" else None
        if self.g_idx is None:
            return self.packed, scale, zero, group_size, None
        perm = torch.argsort(self.g_idx.long(), stable=True)
        counts = torch.bincount(self.g_idx.long(), minlength=scale.shape[1])
        if group_size is None or bool((counts != group_size).any()):
            raise ValueError(
                "g_idx must assign exactly group_size columns to every group to run through the GEMM"
            )
        packed = dllm_kernels.pack(self.codes[:, perm].contiguous(), self.spec.bits)
        return packed, scale, zero, group_size, perm
