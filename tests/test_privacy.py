"""Tests of dptheory.privacy: published values, equality with dp-accounting, inversion, monotonicity."""

from __future__ import annotations

import math

import dp_accounting
import pytest
from dp_accounting import pld, rdp
from hypothesis import given, settings
from hypothesis import strategies as st

from dptheory.privacy import (
    PoissonGaussianMechanism,
    dp_event,
    epsilon,
    noise_multiplier_for_epsilon,
)

DELTA = 1e-5

# Reference values computed with dp-accounting 0.6 / Opacus 1.6 (δ = 1e-5, PLD Δ = 1e-4):
# (σ, q, T) → (RDP ε, PLD ε, PRV ε_up)
PUBLISHED = [
    ((1.0, 256 / 50000, 9765), (3.1019, 2.8397, 2.8498)),
    ((10.0, 4096 / 50000, 875), (0.9877, 0.9028, 0.9128)),
    ((1.3, 240 / 60000, 3750), (0.9220, 0.8336, 0.8436)),
]


def _mech(sigma, q, steps):
    return PoissonGaussianMechanism(noise_multiplier=sigma, sample_rate=q, steps=steps)


@pytest.mark.parametrize("setting,expected", PUBLISHED)
def test_reference_values_rdp_pld(setting, expected):
    m = _mech(*setting)
    e_rdp = epsilon(mechanisms=m, delta=DELTA, accountant="rdp")
    e_pld = epsilon(mechanisms=m, delta=DELTA, accountant="pld")
    assert e_rdp == pytest.approx(expected[0], abs=1e-4)
    assert e_pld == pytest.approx(expected[1], abs=1e-4)
    # RDP → (ε, δ) conversion is lossy; PLD (pessimistic discretisation) is tighter, still an upper bound
    assert e_pld < e_rdp


def test_reference_value_prv():
    m = _mech(*PUBLISHED[2][0])
    # PRV's upper estimate; eps_error = 0.01 so the published value is matched to that accuracy.
    assert epsilon(mechanisms=m, delta=DELTA, accountant="prv") == pytest.approx(PUBLISHED[2][1][2], abs=0.01)


def test_equals_dp_accounting_called_directly():
    sigma, q, steps = 1.5, 0.01, 300
    ev = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    a = rdp.RdpAccountant()
    a.compose(ev)
    b = pld.PLDAccountant(value_discretization_interval=1e-4)
    b.compose(ev)
    m = _mech(sigma, q, steps)
    assert dp_event(m) == ev
    assert epsilon(mechanisms=m, delta=DELTA, accountant="rdp") == a.get_epsilon(DELTA)
    assert epsilon(mechanisms=m, delta=DELTA, accountant="pld") == b.get_epsilon(DELTA)


def test_composition_of_two_runs_equals_composed_event_and_exceeds_each():
    m1, m2 = _mech(2.0, 0.02, 300), _mech(1.0, 0.01, 500)
    ev = dp_accounting.ComposedDpEvent([dp_event(m1), dp_event(m2)])
    a = rdp.RdpAccountant()
    a.compose(ev)
    both = epsilon(mechanisms=[m1, m2], delta=DELTA, accountant="rdp")
    assert both == a.get_epsilon(DELTA)
    assert both > max(epsilon(mechanisms=m, delta=DELTA) for m in (m1, m2))
    # composing a mechanism with itself is the same as doubling its steps (same σ, q)
    assert epsilon(mechanisms=[m2, m2], delta=DELTA) == pytest.approx(
        epsilon(mechanisms=_mech(1.0, 0.01, 1000), delta=DELTA), rel=1e-12
    )


def test_calibration_with_a_prior_release_is_conservative_for_the_composition():
    prior = [_mech(1.0, 0.02, 200)]  # ε ≈ 2.23 alone
    sigma = noise_multiplier_for_epsilon(
        target_epsilon=3.0, delta=DELTA, sample_rate=0.02, steps=200, prior_mechanisms=prior, rtol=1e-3
    )
    total = epsilon(mechanisms=prior + [_mech(sigma, 0.02, 200)], delta=DELTA)
    assert 0.97 * 3.0 < total <= 3.0
    # part of the budget is spent already: the new run alone stays clearly below the target
    assert epsilon(mechanisms=_mech(sigma, 0.02, 200), delta=DELTA) < 0.9 * 3.0
    with pytest.raises(ValueError, match="already spent"):
        noise_multiplier_for_epsilon(
            target_epsilon=2.0, delta=DELTA, sample_rate=0.02, steps=200, prior_mechanisms=prior
        )


def test_degenerate_mechanisms():
    assert epsilon(mechanisms=_mech(0.0, 0.01, 10), delta=DELTA) == math.inf
    assert epsilon(mechanisms=_mech(1.0, 0.01, 0), delta=DELTA) == 0.0
    assert epsilon(mechanisms=[_mech(1.0, 0.01, 0), _mech(1.0, 0.01, 100)], delta=DELTA) == epsilon(
        mechanisms=_mech(1.0, 0.01, 100), delta=DELTA
    )


def test_inversion_reference_value_and_conservative():
    # σ for ε = 8, δ = 1e-5, q = 256/50000, 50 epochs (T = 9765) by RDP: 0.6816 to 4 digits from a coarser
    # search (published with the dp-accounting / Opacus examples); the exact RDP root lies in [0.6813, 0.6815].
    sigma = noise_multiplier_for_epsilon(target_epsilon=8.0, delta=DELTA, sample_rate=256 / 50000, steps=9765)
    assert sigma == pytest.approx(0.6816, abs=3e-4)
    eps_at = epsilon(mechanisms=_mech(sigma, 256 / 50000, 9765), delta=DELTA)
    assert eps_at <= 8.0
    # tight: a σ smaller by 2·rtol already exceeds the target
    assert epsilon(mechanisms=_mech(sigma * (1 - 2e-4), 256 / 50000, 9765), delta=DELTA) > 8.0


@pytest.mark.parametrize("accountant,targets", [("rdp", (0.5,)), ("pld", (2.0,))])
def test_round_trip_is_conservative(accountant, targets):
    q, steps = 0.02, 200
    for target in targets:
        sigma = noise_multiplier_for_epsilon(
            target_epsilon=target,
            delta=DELTA,
            sample_rate=q,
            steps=steps,
            accountant=accountant,
            rtol=1e-3,
            pld_discretization=1e-3,
        )
        eps_back = epsilon(
            mechanisms=_mech(sigma, q, steps), delta=DELTA, accountant=accountant, pld_discretization=1e-3
        )
        assert eps_back <= target
        assert eps_back > 0.97 * target  # and not uselessly loose (rtol = 1e-3 on σ)


@settings(max_examples=4, deadline=None)
@given(sigma=st.floats(0.5, 5.0), q=st.floats(1e-3, 0.2), steps=st.integers(1, 2000), factor=st.floats(1.05, 2.0))
def test_monotonicity_rdp(sigma, q, steps, factor):
    base = epsilon(mechanisms=_mech(sigma, q, steps), delta=DELTA)
    assert epsilon(mechanisms=_mech(sigma * factor, q, steps), delta=DELTA) <= base  # more noise
    assert epsilon(mechanisms=_mech(sigma, min(1.0, q * factor), steps), delta=DELTA) >= base  # more sampling
    assert epsilon(mechanisms=_mech(sigma, q, int(steps * factor) + 1), delta=DELTA) >= base  # more steps


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(noise_multiplier=-1.0, sample_rate=0.1, steps=1), "noise_multiplier"),
        (dict(noise_multiplier=1.0, sample_rate=0.0, steps=1), "sample_rate"),
        (dict(noise_multiplier=1.0, sample_rate=1.5, steps=1), "sample_rate"),
        (dict(noise_multiplier=1.0, sample_rate=0.1, steps=-3), "steps"),
        (dict(noise_multiplier=1.0, sample_rate=0.1, steps=2.5), "steps"),
        (dict(noise_multiplier=float("nan"), sample_rate=0.1, steps=1), "noise_multiplier"),
    ],
)
def test_invalid_mechanism(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PoissonGaussianMechanism(**kwargs)


def test_invalid_epsilon_arguments():
    m = _mech(1.0, 0.1, 10)
    with pytest.raises(ValueError, match=r"delta.*1.5"):
        epsilon(mechanisms=m, delta=1.5)
    with pytest.raises(ValueError, match="delta"):
        epsilon(mechanisms=m, delta=0.0)
    with pytest.raises(ValueError, match=r"accountant.*'gdp'"):
        epsilon(mechanisms=m, delta=DELTA, accountant="gdp")
    with pytest.raises(ValueError, match="mechanisms"):
        epsilon(mechanisms=[], delta=DELTA)
    with pytest.raises(ValueError, match="mechanisms"):
        epsilon(mechanisms=[(1.0, 0.1, 10)], delta=DELTA)
    with pytest.raises(ValueError, match=r"target_epsilon.*-1"):
        noise_multiplier_for_epsilon(target_epsilon=-1, delta=DELTA, sample_rate=0.1, steps=10)
    with pytest.raises(ValueError, match="steps"):
        noise_multiplier_for_epsilon(target_epsilon=1, delta=DELTA, sample_rate=0.1, steps=0)


def test_cache_returns_the_uncached_value_and_distinguishes_mechanisms():
    # the memoised ε (dptheory.privacy._epsilon_cached) is the value the accountant computes afresh
    # (called here through __wrapped__, bypassing the cache), identical to the last bit; and a
    # mechanism whose σ differs only in the 12th significant digit is a different key: its ε is
    # recomputed (one more cache miss) and differs from the first
    from dptheory.privacy import _epsilon_cached

    m = PoissonGaussianMechanism(noise_multiplier=1.1, sample_rate=0.02, steps=300)
    prior = PoissonGaussianMechanism(noise_multiplier=2.0, sample_rate=0.02, steps=100)
    for mechs, acc in (([m], "rdp"), ([prior, m], "rdp"), ([m], "pld")):
        first = epsilon(mechanisms=mechs, delta=DELTA, accountant=acc)
        again = epsilon(mechanisms=mechs, delta=DELTA, accountant=acc)
        fresh = _epsilon_cached.__wrapped__(tuple(mechs), DELTA, acc, 1e-4, 0.01)
        assert first == again == fresh
    near = PoissonGaussianMechanism(noise_multiplier=1.1 * (1 + 1e-11), sample_rate=0.02, steps=300)
    assert near != m and near.noise_multiplier != m.noise_multiplier
    misses = _epsilon_cached.cache_info().misses
    e_near = epsilon(mechanisms=near, delta=DELTA, accountant="rdp")
    assert _epsilon_cached.cache_info().misses == misses + 1
    e_m = epsilon(mechanisms=m, delta=DELTA, accountant="rdp")
    assert _epsilon_cached.cache_info().misses == misses + 1  # m was cached above: a hit
    assert e_near != e_m and e_near == _epsilon_cached.__wrapped__((near,), DELTA, "rdp", 1e-4, 0.01)
    # other keys: δ, accountant, discretisation and the order of a composition are part of the key
    assert epsilon(mechanisms=m, delta=DELTA * (1 + 1e-11), accountant="rdp") != e_m
    assert epsilon(mechanisms=m, delta=DELTA, accountant="pld", pld_discretization=2e-4) != epsilon(
        mechanisms=m, delta=DELTA, accountant="pld"
    )


def test_prv_calibration_is_conservative_and_refuses_priors():
    pytest.importorskip("opacus")  # a third-party optional dependency (the nn extra), not our own module
    sigma = noise_multiplier_for_epsilon(target_epsilon=2.0, delta=DELTA, sample_rate=0.02, steps=200, accountant="prv")
    assert epsilon(mechanisms=_mech(sigma, 0.02, 200), delta=DELTA, accountant="prv") <= 2.0
    with pytest.raises(ValueError, match="prior_mechanisms"):
        noise_multiplier_for_epsilon(
            target_epsilon=5.0,
            delta=DELTA,
            sample_rate=0.02,
            steps=200,
            accountant="prv",
            prior_mechanisms=[_mech(1.0, 0.02, 10)],
        )


def test_calibration_is_dp_accountings(monkeypatch):
    """The inversion is dp-accounting's calibrate_dp_mechanism (not a search of our own)."""
    from dp_accounting import mechanism_calibration

    calls = []
    original = mechanism_calibration.calibrate_dp_mechanism

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(mechanism_calibration, "calibrate_dp_mechanism", spy)
    sigma = noise_multiplier_for_epsilon(target_epsilon=1.0, delta=DELTA, sample_rate=0.01, steps=100)
    assert len(calls) == 1 and calls[0]["target_epsilon"] == 1.0
    assert epsilon(mechanisms=_mech(sigma, 0.01, 100), delta=DELTA) <= 1.0
