"""Privacy accounting of DP-SGD, delegated to dp-accounting (and Opacus's PRV accountant).

Nothing here derives RDP or a privacy-loss distribution by hand. The DP-SGD
mechanism is the frozen record :class:`PoissonGaussianMechanism` — T compositions of the
Poisson-subsampled Gaussian mechanism

    M(D) = Σ_{i ∈ S} clip_C(g_i) + N(0, σ² C² I),   S ∋ i independently with probability q,

with σ = ``noise_multiplier``, q = ``sample_rate``, T = ``steps`` (Abadi et al. 2016,
arXiv 1607.00133v2 Alg. 1; add/remove-one adjacency). It is converted at ONE boundary,
:func:`dp_event`, to the dp-accounting 0.6 event

    SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), T)

and several mechanisms (e.g. a private pruning mask taken from an earlier DP run, then the training
run) compose as a ``ComposedDpEvent``. Three accountants give an upper bound on ε at a given δ:

* ``"rdp"``: ``dp_accounting.rdp.RdpAccountant`` (Mironov 2017, arXiv 1702.07476v3; subsampled
  Gaussian RDP of Mironov, Talwar, Zhang 2019, arXiv 1908.10530v1) with its default orders;
  looser than the other two.
* ``"pld"``: ``dp_accounting.pld.PLDAccountant`` (Doroshenko et al. 2022, arXiv 2207.04380v2) with
  pessimistic value discretisation ``pld_discretization`` (default Δ = 1e-4): an upper bound that
  tightens as Δ → 0.
* ``"prv"``: ``opacus.accountants.PRVAccountant`` (Gopi, Lee, Wutschitz 2021, arXiv 2106.02848v2),
  its upper estimate ``eps_upper`` with ``eps_error`` = 0.01; needs opacus (``dpbasin[nn]``).

GDP / CLT accounting can underestimate ε and is deliberately not offered. :func:`epsilon` is
memoised on the exact (mechanisms, δ, accountant, discretisation) — a pure function, so repeated
calls (per-epoch ε, σ calibrations of a sweep) return the identical float without recomputation.
Reference values (computed with dp-accounting 0.6 and Opacus 1.6; δ = 1e-5): (σ, q, T) = (1.0, 256/50000, 9765) → RDP ε 3.1019,
PLD ε 2.8397, PRV ε 2.8498.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import dp_accounting
from dp_accounting import pld as _pld
from dp_accounting import rdp as _rdp

from dptheory.validate import check_int, check_nonnegative, check_positive, check_probability

ACCOUNTANTS = ("rdp", "pld", "prv")

__all__ = [
    "ACCOUNTANTS",
    "PoissonGaussianMechanism",
    "dp_event",
    "epsilon",
    "noise_multiplier_for_epsilon",
]


@dataclass(frozen=True)
class PoissonGaussianMechanism:
    """T-fold composition of the Poisson-subsampled Gaussian mechanism (one DP-SGD run).

    ``noise_multiplier`` = σ (noise std on the clipped sum divided by the clip norm C),
    ``sample_rate`` = q = B_exp / n (each example enters each batch independently with probability
    q), ``steps`` = T. σ = 0 with T > 0 is allowed and means *no privacy* (ε = ∞); T = 0 costs
    nothing (ε = 0).

    Example:
        >>> m = PoissonGaussianMechanism(noise_multiplier=1.0, sample_rate=256 / 50000, steps=9765)
        >>> round(epsilon(mechanisms=m, delta=1e-5, accountant="rdp"), 4)
        3.1019
    """

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_multiplier", check_nonnegative("noise_multiplier", self.noise_multiplier))
        object.__setattr__(self, "sample_rate", check_probability("sample_rate", self.sample_rate, open_left=True))
        object.__setattr__(self, "steps", check_int("steps", self.steps, minimum=0))

    @property
    def is_private(self) -> bool:
        """False if the mechanism releases noiseless sums (σ = 0 and T > 0): ε = ∞."""
        return self.steps == 0 or self.noise_multiplier > 0


Mechanisms: TypeAlias = PoissonGaussianMechanism | Sequence[PoissonGaussianMechanism]


def _as_list(mechanisms: Mechanisms) -> list[PoissonGaussianMechanism]:
    items = [mechanisms] if isinstance(mechanisms, PoissonGaussianMechanism) else list(mechanisms)
    if not items:
        raise ValueError("mechanisms must hold at least one PoissonGaussianMechanism, got an empty sequence")
    for m in items:
        if not isinstance(m, PoissonGaussianMechanism):
            raise ValueError(f"mechanisms must be PoissonGaussianMechanism records, got {m!r}")
    return items


def dp_event(mechanisms: Mechanisms) -> dp_accounting.DpEvent:
    """The dp-accounting event of one mechanism or the composition of several (the ONE boundary).

    Example:
        >>> dp_event(PoissonGaussianMechanism(noise_multiplier=1.0, sample_rate=0.01, steps=10))
        SelfComposedDpEvent(event=PoissonSampledDpEvent(sampling_probability=0.01, event=GaussianDpEvent(noise_multiplier=1.0)), count=10)
    """
    events = []
    for m in _as_list(mechanisms):
        if m.steps == 0:
            continue
        step = dp_accounting.PoissonSampledDpEvent(m.sample_rate, dp_accounting.GaussianDpEvent(m.noise_multiplier))
        events.append(dp_accounting.SelfComposedDpEvent(step, m.steps))
    if not events:
        return dp_accounting.NoOpDpEvent()
    return events[0] if len(events) == 1 else dp_accounting.ComposedDpEvent(events)


def _check_accountant(accountant: str) -> str:
    name = str(accountant).lower()
    if name not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")
    return name


def _check_delta(delta: float) -> float:
    d = check_positive("delta", delta)
    if not d < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return d


def epsilon(
    *,
    mechanisms: Mechanisms,
    delta: float,
    accountant: str = "rdp",
    pld_discretization: float = 1e-4,
    prv_eps_error: float = 0.01,
) -> float:
    """ε(δ) of one DP-SGD mechanism or of the composition of several — an upper bound.

    ``mechanisms`` = one :class:`PoissonGaussianMechanism` or a sequence (composed: e.g. the run
    that produced a private pruning mask, then the training run), ``delta`` = δ ∈ (0, 1),
    ``accountant`` ∈ {"rdp", "pld", "prv"} (module docstring), ``pld_discretization`` = the PLD
    value discretisation interval Δ (pessimistic: ε is overestimated by O(Δ·T) at most),
    ``prv_eps_error`` = the PRV accountant's ε error (its upper estimate is returned).
    Returns ``math.inf`` if some mechanism has σ = 0 and T > 0, 0 if all have T = 0.

    Example:
        >>> m = PoissonGaussianMechanism(noise_multiplier=1.3, sample_rate=240 / 60000, steps=3750)
        >>> round(epsilon(mechanisms=m, delta=1e-5, accountant="pld"), 4)   # dp-accounting 0.6, PLD Δ = 1e-4
        0.8336
    """
    items = _as_list(mechanisms)
    delta = _check_delta(delta)
    name = _check_accountant(accountant)
    pld_discretization = check_positive("pld_discretization", pld_discretization)
    prv_eps_error = check_positive("prv_eps_error", prv_eps_error)
    if any(not m.is_private for m in items):
        return math.inf
    active = tuple(m for m in items if m.steps > 0)
    if not active:
        return 0.0
    return _epsilon_cached(active, delta, name, pld_discretization, prv_eps_error)


@functools.lru_cache(maxsize=4096)
def _epsilon_cached(
    active: tuple[PoissonGaussianMechanism, ...],
    delta: float,
    name: str,
    pld_discretization: float,
    prv_eps_error: float,
) -> float:
    """ε of validated, private mechanisms with T > 0 — memoised (process-wide LRU cache).

    A pure function of its arguments: the key is the tuple of frozen mechanism records (compared
    field by field with exact float equality, so σ differing in any digit is another key; order
    kept) and the exact δ, accountant and discretisation. Training loops and σ calibrations repeat
    the same calls (every run of a sweep with the same (σ, q, T), every bisection from σ = 1), each an
    accountant evaluation (docs/findings-theory.md gives the cost); a cache hit returns the identical
    float.
    """
    if name == "prv":
        from opacus.accountants import PRVAccountant

        acc = PRVAccountant()
        acc.history = [(m.noise_multiplier, m.sample_rate, m.steps) for m in active]
        return float(acc.get_epsilon(delta, eps_error=prv_eps_error))
    if name == "rdp":
        acc_ = _rdp.RdpAccountant()
    else:
        acc_ = _pld.PLDAccountant(value_discretization_interval=pld_discretization)
    acc_.compose(dp_event(active))
    return float(acc_.get_epsilon(delta))


def noise_multiplier_for_epsilon(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    rtol: float = 1e-4,
    pld_discretization: float = 1e-4,
    prior_mechanisms: Sequence[PoissonGaussianMechanism] = (),
) -> float:
    """A σ within relative tolerance ``rtol`` of the smallest σ whose mechanism has ε(δ) ≤ ``target_epsilon``.

    Delegated to dp-accounting: a bracket [σ/2, σ] is found by doubling / halving from σ = 1 (ε
    decreases in σ), then ``dp_accounting.mechanism_calibration.calibrate_dp_mechanism`` (Brent's
    method with its own bisection fallback) returns a σ with ε(σ) ≤ target — the conservative side
    is dp-accounting's contract and is tested here too — within ``rtol``·σ_lo of the exact root.
    ``target_epsilon`` = ε > 0, ``delta`` = δ, ``sample_rate`` = q, ``steps`` = T ≥ 1,
    ``accountant`` "rdp" or "pld" (dp-accounting; "prv" through Opacus's ``get_noise_multiplier``,
    without prior mechanisms); ``prior_mechanisms`` = earlier releases on the same data (e.g. the DP
    run that produced a pruning mask) composed with the new run, so that ε(prior ∘ new(σ)) ≤ target.

    Example:
        >>> sigma = noise_multiplier_for_epsilon(target_epsilon=8, delta=1e-5, sample_rate=256 / 50000,
        ...                                      steps=9765, accountant="rdp")
        >>> round(sigma, 4)
        0.6814
    """
    from dp_accounting import mechanism_calibration

    target = check_positive("target_epsilon", target_epsilon)
    delta = _check_delta(delta)
    q = check_probability("sample_rate", sample_rate, open_left=True)
    steps = check_int("steps", steps, minimum=1)
    name = _check_accountant(accountant)
    rtol = check_positive("rtol", rtol)
    prior = _as_list(prior_mechanisms) if len(prior_mechanisms) else []
    if name == "prv":
        if prior:
            raise ValueError("accountant='prv' cannot calibrate with prior_mechanisms; use 'rdp' or 'pld'")
        from opacus.accountants.utils import get_noise_multiplier

        return float(
            get_noise_multiplier(
                target_epsilon=target,
                target_delta=delta,
                sample_rate=q,
                steps=steps,
                accountant="prv",
                epsilon_tolerance=rtol * target,
            )
        )
    if (
        prior
        and epsilon(mechanisms=prior, delta=delta, accountant=name, pld_discretization=pld_discretization) >= target
    ):
        raise ValueError(f"target_epsilon={target!r} is already spent by prior_mechanisms at delta={delta!r}")

    def eps(sigma: float) -> float:
        mech = PoissonGaussianMechanism(noise_multiplier=sigma, sample_rate=q, steps=steps)
        return epsilon(mechanisms=prior + [mech], delta=delta, accountant=name, pld_discretization=pld_discretization)

    hi = 1.0
    while eps(hi) > target:
        hi *= 2.0
        if hi > 1e6:
            raise ValueError(
                f"target_epsilon={target!r} is unreachable for delta={delta!r}, sample_rate={q!r}, "
                f"steps={steps!r} (noise_multiplier > 1e6 needed)"
            )
    lo = hi / 2.0
    while eps(lo) <= target:
        hi = lo
        lo /= 2.0
        if lo < 1e-6:  # ε(σ → 0) = ∞, so this only happens for absurdly large targets
            return hi

    def fresh() -> dp_accounting.PrivacyAccountant:
        if name == "rdp":
            return _rdp.RdpAccountant()
        return _pld.PLDAccountant(value_discretization_interval=pld_discretization)

    def event(sigma: float) -> dp_accounting.DpEvent:
        return dp_event(prior + [PoissonGaussianMechanism(noise_multiplier=sigma, sample_rate=q, steps=steps)])

    # invariant: eps(lo) > target >= eps(hi)
    sigma = mechanism_calibration.calibrate_dp_mechanism(
        fresh,
        event,
        target_epsilon=target,
        target_delta=delta,
        bracket_interval=mechanism_calibration.ExplicitBracketInterval(lo, hi),
        tol=rtol * lo,
    )
    return float(sigma)
