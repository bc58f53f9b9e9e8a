"""Orthonormal Hadamard matrices for powers of two and Kronecker sizes ``m * 2^k``.

``hadamard_matrix(n) = kron(P_m, S_p) / sqrt(n)`` with ``n = m * p``, ``p = 2^k`` and

* ``S_p`` the Sylvester matrix ``S[i, j] = (-1)^popcount(i & j)`` (equal to ``scipy.linalg.hadamard(p)``);
* ``P_m`` (``m = 1`` for powers of two) a Paley matrix built from quadratic residues of a prime ``q``:
  Paley I (``q = 3 mod 4``) has order ``q + 1``; Paley II (``q = 1 mod 4``) has order ``2 (q + 1)``.
  Examples: 12 = Paley I(11), 20 = Paley I(19), 28 = Paley II(13), 36 = Paley II(17), 148 = Paley II(73).

For a given n the base m is the smallest ``odd(n) * 2^j`` (``j >= 2``) with a Paley construction (Paley I
preferred). Required model sizes: 64, 128, 256, 4096 (powers of two), 768 = 12*64, 1536 = 12*128,
3584 = 28*128, 12288 = 12*1024, 18944 = 148*128. Sizes with an odd factor but no such base (e.g. 3*2^k
for k < 2, since 3 and 6 are not Hadamard orders) raise ``ValueError``.

All matrices are float64; ``H @ H.T == I`` up to rounding. Row index ``i = a * p + b`` pairs the Paley
index ``a`` (outer, slow) with the Sylvester index ``b`` (inner, fast).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "base_factor",
    "hadamard_base",
    "hadamard_matrix",
    "paley_matrix",
    "supported_hadamard_size",
    "sylvester_matrix",
]


def _is_prime(q: int) -> bool:
    if q < 2:
        return False
    f = 2
    while f * f <= q:
        if q % f == 0:
            return False
        f += 1
    return True


def _paley_kind(m: int) -> int:
    """1 or 2 if a Paley I / Paley II matrix of order m exists from a prime q, else 0."""
    if _is_prime(m - 1) and (m - 1) % 4 == 3:
        return 1
    if m % 2 == 0 and _is_prime(m // 2 - 1) and (m // 2 - 1) % 4 == 1:
        return 2
    return 0


def _jacobsthal(q: int) -> np.ndarray:
    """``Q[i, j] = chi(j - i)`` with chi the quadratic character mod prime q (chi(0) = 0); int64 [q, q]."""
    chi = -np.ones(q, dtype=np.int64)
    chi[0] = 0
    chi[(np.arange(1, q) ** 2) % q] = 1
    idx = np.arange(q)
    return chi[(idx[None, :] - idx[:, None]) % q]


def paley_matrix(m: int) -> np.ndarray:
    """Unnormalized ±1 Hadamard matrix of order m (int64 [m, m]) via Paley I or Paley II."""
    kind = _paley_kind(m)
    if kind == 1:
        q = m - 1
        s = np.zeros((m, m), dtype=np.int64)
        s[0, 1:] = 1
        s[1:, 0] = -1
        s[1:, 1:] = _jacobsthal(q)
        return s + np.eye(m, dtype=np.int64)
    if kind == 2:
        q = m // 2 - 1
        c = np.zeros((q + 1, q + 1), dtype=np.int64)
        c[0, 1:] = 1
        c[1:, 0] = 1
        c[1:, 1:] = _jacobsthal(q)
        plus = np.array([[1, 1], [1, -1]], dtype=np.int64)
        zero_block = np.array([[1, -1], [-1, -1]], dtype=np.int64)
        return np.kron(c, plus) + np.kron(np.eye(q + 1, dtype=np.int64), zero_block)
    raise ValueError(
        f"no Paley construction of order {m}: needs {m}-1 prime = 3 mod 4 or {m}/2-1 prime = 1 mod 4"
    )


def _split(n: int) -> tuple[int, int]:
    """(odd part, power of two) of n >= 1."""
    p = n & -n
    return n // p, p


def hadamard_base(n: int) -> int | None:
    """The Paley base order m used for n (1 for powers of two), or None if n is unsupported."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        return None
    odd, p = _split(int(n))
    if odd == 1:
        return 1
    j = 4
    while j <= p:
        if _paley_kind(odd * j):
            return odd * j
        j *= 2
    return None


def supported_hadamard_size(n: int) -> bool:
    """True if :func:`hadamard_matrix` can build an orthonormal Hadamard matrix of order n."""
    return hadamard_base(n) is not None


def _unsupported(n: object) -> ValueError:
    examples = [m for m in range(4, 200, 4) if _paley_kind(m)]
    return ValueError(
        f"no Hadamard matrix of size {n!r}: supported sizes are powers of two and m * 2^k where m is a Paley "
        f"order (q+1 for prime q = 3 mod 4, or 2(q+1) for prime q = 1 mod 4), i.e. m in {examples} ...; "
        "e.g. 768 = 12*64, 3584 = 28*128, 12288 = 12*1024, 18944 = 148*128. Pad the dimension to such a size."
    )


def sylvester_matrix(p: int) -> np.ndarray:
    """Unnormalized Sylvester matrix int64 ``[p, p]`` for a power of two p: ``(-1)^popcount(i & j)``."""
    idx = np.arange(p)
    both = idx[:, None] & idx[None, :]
    parity = np.zeros((p, p), dtype=np.int64)
    while both.any():
        parity ^= both & 1
        both >>= 1
    return 1 - 2 * parity


@lru_cache(maxsize=64)
def base_factor(n: int) -> np.ndarray:
    """Read-only unnormalized ±1 float64 base factor ``P_m`` of size n (``[[1.]]`` for powers of two)."""
    m = hadamard_base(n)
    if m is None:
        raise _unsupported(n)
    out = (paley_matrix(m) if m > 1 else np.ones((1, 1), dtype=np.int64)).astype(np.float64)
    out.flags.writeable = False
    return out


def hadamard_matrix(n: int) -> np.ndarray:
    """Orthonormal Hadamard matrix float64 ``[n, n]`` (entries ±1/sqrt(n)); see the module docstring.

    Builds the dense matrix (8 n^2 bytes: 2.9 GB for 18944); prefer ``hadamard_transform`` for large n.
    """
    if hadamard_base(n) is None:
        raise _unsupported(n)
    base = base_factor(int(n))
    return np.kron(base, sylvester_matrix(int(n) // base.shape[0])) / np.sqrt(n)
