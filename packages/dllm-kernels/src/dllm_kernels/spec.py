"""`QuantSpec`: the one validated, serializable quantization config used across dllmq.

A spec says how a 2-D tensor ``[rows, cols]`` is quantized:

* ``bits`` in {2, 3, 4, 8};
* ``symmetric``: symmetric (signed codes, no zero point) or asymmetric (unsigned codes + zero point);
* ``granularity``: ``"tensor"`` (one scale), ``"channel"`` (one scale per row of a weight ``[out, in]``),
  ``"group"`` (one scale per ``group_size`` consecutive columns of a row), ``"token"`` (one scale per row
  of an activation matrix ``[tokens, features]``; computed exactly like ``"channel"``);
* ``type``: ``"int"`` or ``"float"`` (fp8 e4m3, only with ``bits=8``, always symmetric).

It converts to and from compressed-tensors' ``QuantizationArgs`` (field names ``num_bits``, ``type``,
``symmetric``, ``strategy``, ``group_size``, ``dynamic``) so that it can be written into a checkpoint's
``quantization_config``. compressed-tensors is imported lazily: it is not a runtime dependency.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

SUPPORTED_BITS = (2, 3, 4, 8)
GRANULARITIES = ("tensor", "channel", "group", "token")
TYPES = ("int", "float")
FP8_E4M3_MAX = 448.0

Granularity = Literal["tensor", "channel", "group", "token"]
QuantType = Literal["int", "float"]


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize a 2-D tensor; validated on construction (raises ``ValueError``).

    Attributes:
        bits: code width, one of 2, 3, 4, 8.
        symmetric: True for signed codes and no zero point, False for unsigned codes plus a zero point.
        granularity: ``"tensor"``, ``"channel"``, ``"group"`` or ``"token"``.
        group_size: columns per group; required iff ``granularity == "group"``.
        type: ``"int"`` or ``"float"`` (fp8 e4m3; needs ``bits=8`` and ``symmetric=True``).
    """

    bits: int
    symmetric: bool = True
    granularity: Granularity = "channel"
    group_size: int | None = None
    type: QuantType = "int"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or self.bits not in SUPPORTED_BITS:
            raise ValueError(f"QuantSpec.bits must be one of {SUPPORTED_BITS}, got {self.bits!r}")
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"QuantSpec.symmetric must be a bool, got {self.symmetric!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"QuantSpec.granularity must be one of {GRANULARITIES}, got {self.granularity!r}"
            )
        if self.type not in TYPES:
            raise ValueError(f"QuantSpec.type must be one of {TYPES}, got {self.type!r}")
        if self.granularity == "group":
            if (
                isinstance(self.group_size, bool)
                or not isinstance(self.group_size, int)
                or self.group_size <= 0
            ):
                raise ValueError(
                    "QuantSpec with granularity='group' needs a positive integer group_size "
                    f"(e.g. 128), got {self.group_size!r}"
                )
        elif self.group_size is not None:
            raise ValueError(
                f"QuantSpec.group_size is only allowed with granularity='group'; got group_size="
                f"{self.group_size!r} with granularity={self.granularity!r}. Drop group_size or use 'group'."
            )
        if self.type == "float":
            if self.bits != 8:
                raise ValueError(
                    f"QuantSpec type='float' means fp8 e4m3 and needs bits=8, got bits={self.bits}"
                )
            if not self.symmetric:
                raise ValueError("QuantSpec type='float' (fp8 e4m3) is symmetric only; set symmetric=True")

    @property
    def is_fp8(self) -> bool:
        """True for fp8 e4m3 (``type == "float"``)."""
        return self.type == "float"

    @property
    def qmin(self) -> int | float:
        """Smallest code: ``-2^(b-1)`` symmetric int, ``0`` asymmetric int, ``-448.0`` fp8."""
        if self.is_fp8:
            return -FP8_E4M3_MAX
        return -(1 << (self.bits - 1)) if self.symmetric else 0

    @property
    def qmax(self) -> int | float:
        """Largest code: ``2^(b-1)-1`` symmetric int, ``2^b-1`` asymmetric int, ``448.0`` fp8."""
        if self.is_fp8:
            return FP8_E4M3_MAX
        return (1 << (self.bits - 1)) - 1 if self.symmetric else (1 << self.bits) - 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serializable dict with the dataclass field names."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"QuantSpec.from_dict got unknown keys {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**data)

    def to_compressed_tensors(self, dynamic: bool | None = None) -> Any:
        """Return the equivalent ``compressed_tensors.quantization.QuantizationArgs``.

        Args:
            dynamic: value of ``QuantizationArgs.dynamic``; defaults to True for ``"token"`` granularity
                (activations are quantized on the fly) and False otherwise.
        """
        try:
            from compressed_tensors.quantization import QuantizationArgs
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "QuantSpec.to_compressed_tensors needs the optional package compressed-tensors "
                "(pip install compressed-tensors)"
            ) from exc
        if dynamic is None:
            dynamic = self.granularity == "token"
        return QuantizationArgs(
            num_bits=self.bits,
            type=self.type,
            symmetric=self.symmetric,
            strategy=self.granularity,
            group_size=self.group_size,
            dynamic=dynamic,
        )

    @classmethod
    def from_compressed_tensors(cls, args: Any) -> QuantSpec:
        """Build a spec from a ``QuantizationArgs`` object or its dict form.

        Reads ``num_bits``, ``type``, ``symmetric``, ``strategy``, ``group_size``; ``dynamic`` is accepted
        and not stored (a spec describes the number format, not when scales are computed). Strategies
        other than tensor/channel/group/token (block, tensor_group, attn_head) and ``actorder`` raise
        ``ValueError``.
        """
        data = dict(args) if isinstance(args, dict) else args.model_dump()
        strategy = _plain(data.get("strategy"))
        if strategy is None:
            raise ValueError("QuantizationArgs.strategy is missing; expected tensor, channel, group or token")
        if strategy not in GRANULARITIES:
            raise ValueError(
                f"QuantizationArgs strategy {strategy!r} is not supported by QuantSpec; "
                f"supported: {GRANULARITIES}"
            )
        actorder = _plain(data.get("actorder"))
        if actorder not in (None, False):
            raise ValueError(f"QuantizationArgs.actorder={actorder!r} is not supported by QuantSpec")
        group_size = data.get("group_size")
        return cls(
            bits=int(data.get("num_bits", 8)),
            symmetric=bool(data.get("symmetric", True)),
            granularity=strategy,
            group_size=int(group_size) if strategy == "group" and group_size is not None else None,
            type=_plain(data.get("type", "int")),
        )


def _plain(value: Any) -> Any:
    """Enum members (compressed-tensors' str enums) -> their string value; anything else unchanged."""
    return getattr(value, "value", value)
