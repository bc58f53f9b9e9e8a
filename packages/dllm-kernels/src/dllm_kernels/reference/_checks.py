"""Input validation shared by the Numba references: every check raises ``ValueError`` naming the fix."""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def as_float2d(x: object, name: str) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 2-D array; raise ``ValueError`` for anything else."""
    arr = _require_ndarray(x, name)
    if arr.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be a float16/float32/float64 array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, cols], got shape {arr.shape}; reshape it first")
    return np.ascontiguousarray(arr, dtype=np.float32)


def as_int_array(
    x: object, name: str, dtypes: tuple[type, ...], shape: tuple[int | None, ...] | None = None
) -> np.ndarray:
    """Return ``x`` C-contiguous after checking its dtype is one of ``dtypes`` and its shape (None = any)."""
    arr = _require_ndarray(x, name)
    if arr.dtype not in dtypes:
        names = "/".join(np.dtype(d).name for d in dtypes)
        raise ValueError(f"{name} must have dtype {names}, got {arr.dtype}")
    if shape is not None:
        check_shape(arr, name, shape)
    return np.ascontiguousarray(arr)


def as_scale(x: object, name: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """Float scale array cast to C-contiguous float32, shape-checked (None = any size in that dim)."""
    arr = _require_ndarray(x, name)
    if arr.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be a float array, got dtype {arr.dtype}")
    check_shape(arr, name, shape)
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_shape(arr: np.ndarray, name: str, shape: tuple[int | None, ...]) -> None:
    """Raise ``ValueError`` unless ``arr.shape`` matches ``shape`` (None entries match anything)."""
    ok = arr.ndim == len(shape) and all(s is None or s == a for a, s in zip(arr.shape, shape, strict=True))
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(arr.shape)}")


def check_bits(bits: object, allowed: tuple[int, ...] = (2, 3, 4, 8)) -> int:
    """Return ``bits`` as int if it is one of ``allowed``."""
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or int(bits) not in allowed:
        raise ValueError(f"bits must be one of {allowed}, got {bits!r}")
    return int(bits)


def packed_words(n: int, bits: int) -> int:
    """Number of int32 words holding ``n`` values of ``bits`` bits densely: ``ceil(n*bits/32)``."""
    return (n * bits + 31) // 32


def _require_ndarray(x: object, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ValueError(
            f"{name} must be a numpy array, got {type(x).__name__}; "
            "torch tensors go through dllm_kernels.ops_cpu"
        )
    return x
