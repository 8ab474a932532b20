"""The two immutable records every model and simulator reads: the basin and the optimizer.

A *streaming low-rank quadratic basin* in ``dim`` = d dimensions:

    L(e) = ½ eᵀ H e,   e = w − w*,   H = diag(λ_1, …, λ_r, λ_flat, …, λ_flat)

with ``curvatures`` = (λ_1, …, λ_r) on the r = ``rank`` curved axes and ``flat_curvature`` = λ_flat
(usually 0) on the d − r flat ones. Per-sample gradients are

    g_i = H e + s ζ_i,   s = ``sample_std``,

with ζ_i ~ N(0, I_d) fresh at every step (``spread="ambient"``) or ζ_i ~ N(0, P_r) supported on the
r curved axes only (``spread="basin"``, P_r the projector onto range(H) when λ_flat = 0).
The held-out ("test") loss adds curvature κ = ``heldout_flat_curvature`` where training is flat:

    L_test(e) = L(e) + ½ κ ‖e_flat‖².

Axis alignment loses no generality for the isotropic dynamics (Gaussian noise and the clip operator
are rotation invariant); it matters only for pruning, which has its own basis argument.

The *optimizer* is one DP-SGD step (Abadi et al. 2016, arXiv 1607.00133v2 Alg. 1; Opacus semantics):

    e ← e − η · (1/B) [ Σ_{i ∈ batch} clip_C(g_i) + ν ξ ],   ξ ~ N(0, I_d),

η = ``lr``, B = ``batch_size`` (the *expected* batch size under Poisson sampling), C = ``clip_norm``,
and ν the noise standard deviation on the **sum**, set by the ``mode`` (the four ablations):

=========  ===========  ==========================
mode        clipping     ν
=========  ===========  ==========================
sgd         no           0
clip        yes (C)      0
noise       no           σ · C_ref (``ref_clip_norm``, defaults to C)
dpsgd       yes (C)      σ · C
=========  ===========  ==========================

σ = ``noise_multiplier``. Only ``dpsgd`` is differentially private; ``noise`` is an ablation that
adds the same noise without the sensitivity bound that clipping provides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from dptheory.validate import (
    check_array_positive,
    check_int,
    check_nonnegative,
    check_positive,
)


class Mode(str, Enum):
    """The four ablation modes of a gradient step (see module docstring)."""

    SGD = "sgd"
    CLIP = "clip"
    NOISE = "noise"
    DPSGD = "dpsgd"

    @property
    def clipped(self) -> bool:
        """True if per-sample gradients are clipped in this mode."""
        return self in (Mode.CLIP, Mode.DPSGD)

    @property
    def noised(self) -> bool:
        """True if Gaussian noise is added to the gradient sum in this mode."""
        return self in (Mode.NOISE, Mode.DPSGD)

    @classmethod
    def parse(cls, value: str | Mode) -> Mode:
        """``Mode("dpsgd")`` with a clear error listing the valid names."""
        if isinstance(value, Mode):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ValueError(f"mode must be one of {names}, got {value!r}") from None


SPREADS = ("ambient", "basin")


@dataclass(frozen=True)
class Basin:
    """Streaming low-rank quadratic basin (see module docstring for every symbol).

    Example:
        >>> b = Basin(dim=1000, curvatures=(1.0, 0.5), sample_std=0.1)
        >>> b.rank, b.flat_dim
        (2, 998)
    """

    dim: int
    curvatures: tuple[float, ...]
    sample_std: float
    spread: str = "ambient"
    flat_curvature: float = 0.0
    heldout_flat_curvature: float = 0.0

    def __post_init__(self) -> None:
        dim = check_int("dim", self.dim, minimum=1)
        lam = check_array_positive("curvatures", self.curvatures)
        if lam.size > dim:
            raise ValueError(f"rank (len(curvatures)) must be <= dim, got rank={lam.size} > dim={dim}")
        object.__setattr__(self, "dim", dim)
        object.__setattr__(self, "curvatures", tuple(float(x) for x in lam))
        object.__setattr__(self, "sample_std", check_nonnegative("sample_std", self.sample_std))
        if self.spread not in SPREADS:
            raise ValueError(f"spread must be one of {', '.join(SPREADS)}, got {self.spread!r}")
        object.__setattr__(self, "flat_curvature", check_nonnegative("flat_curvature", self.flat_curvature))
        object.__setattr__(
            self, "heldout_flat_curvature", check_nonnegative("heldout_flat_curvature", self.heldout_flat_curvature)
        )

    @property
    def rank(self) -> int:
        """r: number of curved directions."""
        return len(self.curvatures)

    @property
    def flat_dim(self) -> int:
        """d − r: number of flat directions."""
        return self.dim - self.rank

    @property
    def curvature_array(self) -> np.ndarray:
        """(λ_1, …, λ_r) as a float array."""
        return np.asarray(self.curvatures, dtype=float)

    @property
    def noise_dim(self) -> int:
        """Number of dimensions the per-sample deviation ζ_i spans: d (ambient) or r (basin)."""
        return self.dim if self.spread == "ambient" else self.rank


@dataclass(frozen=True)
class Optimizer:
    """One (DP-)SGD step: learning rate, expected batch size, clipping and noise (module docstring).

    Example:
        >>> opt = Optimizer(lr=0.1, batch_size=64, clip_norm=1.0, noise_multiplier=1.0, mode="dpsgd")
        >>> opt.noise_std          # ν = σ C on the sum
        1.0
    """

    lr: float
    batch_size: int
    clip_norm: float = math.inf
    noise_multiplier: float = 0.0
    mode: Mode = Mode.DPSGD
    ref_clip_norm: float | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", check_positive("lr", self.lr))
        object.__setattr__(self, "batch_size", check_int("batch_size", self.batch_size, minimum=1))
        mode = Mode.parse(self.mode)
        object.__setattr__(self, "mode", mode)
        c = float(self.clip_norm) if not isinstance(self.clip_norm, bool) else float("nan")
        if math.isnan(c) or not c > 0:
            raise ValueError(f"clip_norm must be > 0, got {self.clip_norm!r}")
        object.__setattr__(self, "clip_norm", c)
        object.__setattr__(self, "noise_multiplier", check_nonnegative("noise_multiplier", self.noise_multiplier))
        if self.ref_clip_norm is not None:
            object.__setattr__(self, "ref_clip_norm", check_positive("ref_clip_norm", self.ref_clip_norm))
        if mode.noised and self.noise_multiplier > 0 and not math.isfinite(self.noise_scale_norm):
            raise ValueError("a noised mode needs a finite clip_norm (or ref_clip_norm for mode='noise')")

    @property
    def effective_clip_norm(self) -> float:
        """C if the mode clips, else inf (no clipping)."""
        return self.clip_norm if self.mode.clipped else math.inf

    @property
    def noise_scale_norm(self) -> float:
        """The norm the noise is calibrated to: C (dpsgd) or C_ref (noise)."""
        if self.mode is Mode.NOISE and self.ref_clip_norm is not None:
            return self.ref_clip_norm
        return self.clip_norm

    @property
    def noise_std(self) -> float:
        """ν: standard deviation of the Gaussian noise added to the gradient **sum** (per coordinate)."""
        if not self.mode.noised or self.noise_multiplier == 0:
            return 0.0
        return self.noise_multiplier * self.noise_scale_norm

    def with_mode(self, mode: Mode | str) -> Optimizer:
        """The same step in another ablation mode (for paired comparisons and phase switching)."""
        from dataclasses import replace

        return replace(self, mode=Mode.parse(mode))


@dataclass(frozen=True)
class LinearDynamics:
    """Per-direction *linear* error dynamics, the common currency of the quadratic models.

    Each curved direction i = 1…r and each of the ``flat_dim`` flat directions evolves as

        e_i(t+1) = (1 − η a_i) e_i(t) + η τ_i ξ_i(t),   ξ_i(t) ~ N(0, 1) i.i.d.,

    η = ``lr``, a_i = ``drift`` (effective curvature: λ_i unclipped, γ λ_i with clipping shrinkage γ),
    τ_i² = ``noise_var`` (per-coordinate variance of the noisy update direction); the flat directions
    share a = ``flat_drift`` and τ² = ``flat_noise_var``. Exact for SGD / noise-only steps on the
    quadratic with fixed batches; a linear-response (mean-field) approximation for clipped steps.
    Produced by ``dptheory.quadratic.noise_only_dynamics`` and
    ``dptheory.clipped_dynamics.effective_linear_model``; consumed by ``dptheory.quadratic`` and
    ``dptheory.switching``.
    """

    lr: float
    drift: tuple[float, ...]
    noise_var: tuple[float, ...]
    flat_dim: int = 0
    flat_drift: float = 0.0
    flat_noise_var: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", check_positive("lr", self.lr))
        a = np.atleast_1d(np.asarray(self.drift, dtype=float))
        t = np.atleast_1d(np.asarray(self.noise_var, dtype=float))
        if a.shape != t.shape or a.ndim != 1:
            raise ValueError(f"drift and noise_var must be 1-D of equal length, got {a.shape} and {t.shape}")
        if not (np.all(np.isfinite(a)) and np.all(a >= 0)):
            raise ValueError(f"drift must be finite and >= 0, got {a.tolist()[:3]}")
        if not (np.all(np.isfinite(t)) and np.all(t >= 0)):
            raise ValueError(f"noise_var must be finite and >= 0, got {t.tolist()[:3]}")
        object.__setattr__(self, "drift", tuple(float(x) for x in a))
        object.__setattr__(self, "noise_var", tuple(float(x) for x in t))
        object.__setattr__(self, "flat_dim", check_int("flat_dim", self.flat_dim, minimum=0))
        object.__setattr__(self, "flat_drift", check_nonnegative("flat_drift", self.flat_drift))
        object.__setattr__(self, "flat_noise_var", check_nonnegative("flat_noise_var", self.flat_noise_var))

    @property
    def contraction(self) -> np.ndarray:
        """1 − η a_i for each curved direction."""
        return 1.0 - self.lr * np.asarray(self.drift)
