"""Random numbers of the basin kernels: xoshiro256++ driving a 256-layer ziggurat, in numba.

Gaussians come from a numba implementation of the 256-layer ziggurat of Marsaglia & Tsang (2000,
J. Stat. Softw. 5(8)), in the double-precision form numpy uses (52-bit mantissa, exact tail by
Marsaglia's exponential method, exact wedges by rejection), driven by xoshiro256++ (Blackman & Vigna
2021, ACM TOMS 47(4)) with a per-replica state array of four uint64 words. The ziggurat is an exact
rejection sampler (no approximation of the density); its only error is that the 256 layer areas are
equal only to the precision of the published constants r = 3.6541528853610088,
v = 4.92867323399e-3 (~1e-11 relative), far below any Monte Carlo resolution. Tests check it by KS,
the tail frequency and the tail law (tests/test_kernels.py).

Every generator state comes from one ``np.random.SeedSequence`` per replica
(:func:`replica_states`), so a replica's stream does not depend on scheduling or on how many
replicas run.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, uint64

__all__ = ["fill_normal", "next_u64", "normal", "replica_states", "standard_normal", "uniform"]


def _ziggurat_tables():
    """Marsaglia–Tsang tables for 256 layers and 52-bit integers (their zigset, double precision)."""
    m1 = 2.0**52
    dn = 3.6541528853610088  # r: start of the tail
    tn = dn
    vn = 4.92867323399e-3  # area of each layer
    ki = np.zeros(256, dtype=np.uint64)
    wi = np.zeros(256)
    fi = np.zeros(256)
    q = vn / math.exp(-0.5 * dn * dn)
    ki[0] = np.uint64(int((dn / q) * m1))
    ki[1] = np.uint64(0)
    wi[0] = q / m1
    wi[255] = dn / m1
    fi[0] = 1.0
    fi[255] = math.exp(-0.5 * dn * dn)
    for i in range(254, 0, -1):
        dn = math.sqrt(-2.0 * math.log(vn / dn + math.exp(-0.5 * dn * dn)))
        ki[i + 1] = np.uint64(int((dn / tn) * m1))
        tn = dn
        fi[i] = math.exp(-0.5 * dn * dn)
        wi[i] = dn / m1
    return ki, wi, fi


_ZIG_K, _ZIG_W, _ZIG_F = _ziggurat_tables()
_ZIG_R = 3.6541528853610088
_ZIG_INV_R = 1.0 / _ZIG_R


@njit(inline="always")
def _rotl(x, k):
    return (x << uint64(k)) | (x >> uint64(64 - k))


@njit(cache=True)
def next_u64(st):
    """xoshiro256++ (Blackman & Vigna): next 64-bit output, state st (4 uint64) advanced in place."""
    s0 = st[0]
    s1 = st[1]
    s2 = st[2]
    s3 = st[3]
    result = _rotl(s0 + s3, 23) + s0
    t = s1 << uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    st[0] = s0
    st[1] = s1
    st[2] = s2
    st[3] = s3
    return result


@njit(cache=True)
def uniform(st):
    """Uniform on [0, 1) with 53 random bits."""
    return (next_u64(st) >> uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def normal(st):
    """One N(0, 1) draw by the ziggurat (exact; module docstring)."""
    while True:
        r = next_u64(st)
        idx = r & uint64(0xFF)
        r = r >> uint64(8)
        sign = r & uint64(1)
        rabs = (r >> uint64(1)) & uint64(0x000FFFFFFFFFFFFF)
        x = rabs * _ZIG_W[idx]
        if sign:
            x = -x
        if rabs < _ZIG_K[idx]:
            return x
        if idx == 0:
            while True:
                xx = -_ZIG_INV_R * math.log1p(-uniform(st))
                yy = -math.log1p(-uniform(st))
                if yy + yy > xx * xx:
                    if (rabs >> uint64(8)) & uint64(1):
                        return -(_ZIG_R + xx)
                    return _ZIG_R + xx
        elif (_ZIG_F[idx - 1] - _ZIG_F[idx]) * uniform(st) + _ZIG_F[idx] < math.exp(-0.5 * x * x):
            return x


@njit(cache=True)
def fill_normal(out, st):
    for i in range(out.shape[0]):
        out[i] = normal(st)


def replica_states(seed_sequences) -> np.ndarray:
    """(R, 5) uint64: per replica a xoshiro256++ state (columns 0–3) and a 32-bit seed for numba's
    ``np.random`` (column 4), all from one ``np.random.SeedSequence`` per replica."""
    out = np.empty((len(seed_sequences), 5), dtype=np.uint64)
    for i, ss in enumerate(seed_sequences):
        words = ss.generate_state(5, np.uint64)
        if not np.any(words[:4]):
            words[0] = np.uint64(1)  # xoshiro's all-zero state is absorbing (probability 2^-256)
        words[4] = words[4] & np.uint64(0xFFFFFFFF)
        out[i] = words
    return out


def standard_normal(*, size: int, seed: int) -> np.ndarray:
    """``size`` N(0, 1) draws from the kernels' ziggurat generator (for tests and benchmarks).

    Example:
        >>> x = standard_normal(size=100_000, seed=0)
        >>> bool(abs(x.mean()) < 4e-2 and abs(x.var() - 1) < 4e-2)
        True
    """
    out = np.empty(int(size))
    fill_normal(out, replica_states([np.random.SeedSequence(seed)])[0, :4].copy())
    return out
