"""Mini-batch noise of a finite training set, Poisson and fixed batches (backs ``dptheory.spectral``).

The update direction is X = (1/B) Σ_{i∈S} c_i over a batch S of the n examples (c_i one coordinate
u_jᵀ c_i of the clipped per-example gradients; the argument is the same for every coordinate and,
with products c_i c_i'ᵀ, for covariances).

1. Poisson sampling (each i ∈ S independently with probability q, B = qn the expected size, the
   sampler the accountant assumes): z_i ~ Bernoulli(q) independent, so
   E X = (q/B) Σ c_i = mean_i c_i and Var X = (q(1 − q)/B²) Σ c_i² = ((1 − q)/B) · mean_i c_i²:
   the *second* moment, mean term included (the batch size fluctuates). Checked symbolically for
   n = 1 … 5 with the Bernoulli moments E z = E z² = q, E z z' = q².
2. Fixed batches of B distinct examples, uniform over the C(n, B) subsets:
   Var X = ((n − B)/((n − 1) B)) · [mean_i c_i² − (mean_i c_i)²] — checked by enumerating every
   subset for all 1 ≤ B ≤ n ≤ 6, symbolic c_i.
3. Splitting the Poisson second moment at e: with c_i(e) = c_i + a e (the common linear part of the
   linear-response model), ((1 − q)/B) mean_i c_i(e)² = ((1 − q)/B)[V + (m + a e)²],
   V = mean_i c_i² − m², m = mean_i c_i: an additive part V and the multiplicative mean part.
"""

from __future__ import annotations

import itertools

import sympy as sp

from proofs.links import CodeLink

STATEMENT = (
    "Var[(1/B) sum_S c_i] = ((1-q)/B) mean c^2 (Poisson, q = B/n); ((n-B)/((n-1)B)) Var_i c (fixed)  "
    "[spectral.spectral_directions]"
)


def poisson_variance(values, batch_size, sample_rate):
    """((1 − q)/B) · mean_i c_i²: the variance of the Poisson-sampled mean update."""
    n = len(values)
    return (1 - sample_rate) / batch_size * sum(c**2 for c in values) / n


def fixed_variance(values, batch_size):
    """((n − B)/((n − 1)B)) · (mean c² − (mean c)²): the variance of a uniform B-subset's sum / B."""
    n = len(values)
    mean = sum(values) / n
    return sp.Rational(n - batch_size, (n - 1) * batch_size) * (sum(c**2 for c in values) / n - mean**2)


def _zero(expr, what: str) -> None:
    r = sp.simplify(sp.expand(expr))
    assert r == 0, f"{what}: residual {r}"


def verify() -> None:
    q = sp.symbols("q", positive=True)
    # 1. Poisson: X = (1/B) Σ z_i c_i, B = q n
    for n in range(1, 6):
        c = sp.symbols(f"c0:{n}", real=True)
        b = q * n
        mean = sum(q * ci for ci in c) / b
        second = sum(ci * cj * (q if i == j else q**2) for i, ci in enumerate(c) for j, cj in enumerate(c)) / b**2
        _zero(mean - sum(c) / n, f"Poisson mean, n={n}")
        _zero(second - mean**2 - poisson_variance(c, b, q), f"Poisson variance, n={n}")
    # 2. fixed batches: enumerate every subset
    for n in range(2, 7):
        c = sp.symbols(f"c0:{n}", real=True)
        for b in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), b))
            xs = [sum(c[i] for i in s) / b for s in subsets]
            mean = sum(xs) / len(xs)
            var = sum(x**2 for x in xs) / len(xs) - mean**2
            _zero(mean - sum(c) / n, f"fixed mean, n={n}, B={b}")
            _zero(var - fixed_variance(c, b), f"fixed variance, n={n}, B={b}")
    # 3. the Poisson second moment at e splits into V and the mean part (m + a e)²
    a, e = sp.symbols("a e", real=True)
    for n in range(1, 5):
        c = sp.symbols(f"c0:{n}", real=True)
        m = sum(c) / n
        v = sum(ci**2 for ci in c) / n - m**2
        shifted = [ci + a * e for ci in c]
        _zero(sum(x**2 for x in shifted) / n - (v + (m + a * e) ** 2), f"mean-part split, n={n}")


# ---------------------------------------------------------------------------------------------
# the closed forms, wired to the code (proofs.links; tests/test_proof_code_links.py)


def _values(seed, n):
    import numpy as np

    return np.random.default_rng(seed).normal(0.3, 1.0, size=n)


def _directions_args(seed, n, batch, sampling, sigma):
    """A one-direction SpectralBasin whose per-example gradients are the values c_i (unclipped SGD arm
    plus DP-sized noise σ on the sum: mode 'noise' with C_ref = 1)."""
    import numpy as np

    from dptheory.records import Optimizer
    from dptheory.spectral import GradientStatistics, SpectralBasin

    c = _values(seed, n)
    basin = SpectralBasin(
        dim=1,
        top_eigenvalues=np.array([1.0]),
        bulk_eigenvalues=np.zeros(0),
        bulk_weights=np.zeros(0),
        gradients=GradientStatistics(norms=np.abs(c), top_projections=c[:, None]),
        n_train=n,
    )
    opt = Optimizer(lr=0.1, batch_size=batch, clip_norm=1.0, noise_multiplier=sigma, mode="noise", ref_clip_norm=1.0)
    return {"basin": basin, "optimizer": opt, "sampling": sampling}


def _step_variance(dirs):
    """The per-step variance of the update at e = 0: τ² + κ f² (module docstring of dptheory.spectral_moments)."""
    return float(dirs.noise_var[0] + dirs.poisson_mult * dirs.clipped_mean[0] ** 2)


_SYMBOLS = {"seed": (0, 10**6), "n": (2, 60), "batch": (1, 60), "sigma": (0.0, 3.0)}
CODE_LINKS = [
    CodeLink(
        function="dptheory.spectral.spectral_directions",
        closed_form=lambda seed, n, batch, sigma: (
            poisson_variance(list(_values(seed, n)), batch, batch / n) + sigma**2 / batch**2
        ),
        symbols=_SYMBOLS,
        integer=frozenset({"seed", "n", "batch"}),
        valid=lambda n, batch, **_: batch <= n,
        arguments=lambda seed, n, batch, sigma: _directions_args(seed, n, batch, "poisson", sigma),
        output=_step_variance,
        rtol=1e-12,
        atol=1e-15,
    ),
    CodeLink(
        function="dptheory.spectral.spectral_directions",
        closed_form=lambda seed, n, batch, sigma: fixed_variance(list(_values(seed, n)), batch) + sigma**2 / batch**2,
        symbols=_SYMBOLS,
        integer=frozenset({"seed", "n", "batch"}),
        valid=lambda n, batch, **_: batch <= n,
        arguments=lambda seed, n, batch, sigma: _directions_args(seed, n, batch, "fixed", sigma),
        output=_step_variance,
        rtol=1e-11,
        atol=1e-15,
    ),
]
