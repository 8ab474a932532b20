"""The exact reduced engine (``simulations/basin/reduced.py``): algebra and distributional identities.

Checked here, in order:

1. Pythagoras for the flat update: with f = ρ û, ζ_i^f = a_i û + z_i, ξ^f = a_0 û + z_0, z_j ⊥ û,
   ‖f'‖² = (ρ − k[Σ c_i(λ_f ρ + s a_i) + ν a_0])² + k²‖ν z_0 + Σ c_i s z_i‖²  (explicit vectors in R⁴).
2. ‖g_i‖² splits as curved + (λ_f ρ + s a_i)² + s²‖z_i‖².
3. The sequential norm update ‖S + w z‖² = (‖S‖ + w n₁)² + w²‖rest‖² for S along the first axis.
4. Distribution: if n₁ ~ N(0, 1) and q ~ χ²_{n−1} are independent, (n₁, √q) reproduces the first
   two moments of ‖S + w Z‖² for Z ~ N(0, I_n) (a noncentral chi-square:
   mean S² + w² n, variance 2 w⁴ n + 4 w² S²) — computed with sympy.stats.
5. The 2-frame re-orthonormalisation (S', T') ↦ (S₁'', T₁'', T₂'') preserves the Gram matrix.
6. The cancellation-free Marsaglia–Tsang forms: v − 1 = y(3 + y(3 + y)) for v = (1 + y)³,
   δ − δv + δ log v = δ(log1p(v − 1) − (v − 1)), and 2δv − 2a = 2δ(v − 1) − 2/3 for δ = a − 1/3.
"""

from __future__ import annotations

import sympy as sp
from sympy.stats import ChiSquared, E, Normal

STATEMENT = (
    "reduced engine: (x, ||e_flat||) is an exact Markov chain; ||f'||^2 = par^2 + k^2 ||S||^2 with S "
    "built sequentially from N(0,1) and chi^2_{n-1} draws (backs simulations.basin.reduced.run_reduced)"
)


NO_CODE_LINK = (
    "backs a random engine (simulations.basin.reduced), not a closed form: its law is tested in distribution "
    "against the d-dimensional kernel in tests/test_reduced_engine.py"
)


def _pythagoras() -> None:
    rho, k, lf, s, nu, c1, c2, a0, a1, a2 = sp.symbols("rho k lambda_f s nu c1 c2 a0 a1 a2", real=True)
    z = [sp.Matrix([0, *sp.symbols(f"z{j}_1:4", real=True)]) for j in range(3)]  # z_j ⊥ û = e_1
    u = sp.Matrix([1, 0, 0, 0])
    f = rho * u
    zeta = [a1 * u + z[1], a2 * u + z[2]]
    xi = a0 * u + z[0]
    c = [c1, c2]
    f_new = f - k * (sum((c[i] * (lf * f + s * zeta[i]) for i in range(2)), sp.zeros(4, 1)) + nu * xi)
    par = rho - k * (sum(c[i] * (lf * rho + s * [a1, a2][i]) for i in range(2)) + nu * a0)
    big_s = nu * z[0] + sum((c[i] * s * z[i + 1] for i in range(2)), sp.zeros(4, 1))
    lhs = (f_new.T * f_new)[0]
    rhs = par**2 + k**2 * (big_s.T * big_s)[0]
    assert sp.expand(lhs - rhs) == 0, "flat update is not par^2 + k^2 ||S||^2"
    # ‖g‖² split (one sample, curved part abstracted as a vector h)
    h = sp.Matrix(sp.symbols("h1:3", real=True))
    g = sp.Matrix.vstack(h, lf * f + s * zeta[0])
    g_sq = (g.T * g)[0]
    assert sp.expand(g_sq - ((h.T * h)[0] + (lf * rho + s * a1) ** 2 + s**2 * (z[1].T * z[1])[0])) == 0


def _sequential_norm() -> None:
    s1, w, n1, r2, r3 = sp.symbols("S1 w n1 r2 r3", real=True)
    big_s = sp.Matrix([s1, 0, 0])
    z = sp.Matrix([n1, r2, r3])
    new = big_s + w * z
    assert sp.expand((new.T * new)[0] - ((s1 + w * n1) ** 2 + w**2 * (r2**2 + r3**2))) == 0


def _independent_expectation(poly, moments):
    """E[poly] for a polynomial in independent variables, given each variable's raw moments."""
    poly = sp.Poly(sp.expand(poly), *moments.keys())
    total = 0
    for powers, coeff in poly.terms():
        term = coeff
        for var, p in zip(moments.keys(), powers):
            term *= moments[var](p)
        total += term
    return sp.simplify(total)


def _moments() -> None:
    s1, w = sp.symbols("S1 w", positive=True)
    k = sp.Symbol("k", positive=True)  # k = n − 1 degrees of freedom of the orthogonal rest
    n = k + 1
    n1_rv = Normal("n1", 0, 1)
    q_rv = ChiSquared("q", k)
    n1, q = sp.symbols("n1 q", real=True)
    moments = {n1: lambda p: sp.simplify(E(n1_rv**p)) if p else 1, q: lambda p: sp.simplify(E(q_rv**p)) if p else 1}
    norm_sq = (s1 + w * n1) ** 2 + w**2 * q
    mean = _independent_expectation(norm_sq, moments)
    second = _independent_expectation(norm_sq**2, moments)
    var = sp.expand(second - mean**2)
    # ‖S + wZ‖², Z ~ N(0, I_n): w² χ'²_n(S²/w²), mean S² + w² n, variance 2w⁴n + 4w²S²
    assert sp.simplify(mean - (s1**2 + w**2 * n)) == 0, mean
    assert sp.simplify(var - (2 * w**4 * n + 4 * w**2 * s1**2)) == 0, var


def _frame() -> None:
    s1, t1, t2, w, w2, n1, n2, c = sp.symbols("S1 T1 T2 w w2 n1 n2 c", real=True)
    z = sp.Matrix([n1, n2, c])
    sv = sp.Matrix([s1, 0, 0]) + w * z
    tv = sp.Matrix([t1, t2, 0]) + w2 * z
    ss, tt, st = (sv.T * sv)[0], (tv.T * tv)[0], (sv.T * tv)[0]
    s_new = sp.sqrt(ss)
    t1_new = st / s_new
    t2_sq = tt - t1_new**2
    # the new frame vectors (s_new, 0) and (t1_new, t2) reproduce the Gram matrix of (S', T')
    assert sp.simplify(s_new**2 - ss) == 0
    assert sp.simplify(s_new * t1_new - st) == 0
    assert sp.simplify(t1_new**2 + t2_sq - tt) == 0
    # and t2² ≥ 0 is the Cauchy–Schwarz gap ‖S'‖²‖T'‖² − ⟨S',T'⟩² (divided by ‖S'‖²), a sum of squares
    gap = sp.expand(ss * tt - st**2)
    cross = sv.cross(tv)
    assert sp.expand(gap - (cross.T * cross)[0]) == 0


def _marsaglia_tsang() -> None:
    y, a = sp.symbols("y a", positive=True)
    v = (1 + y) ** 3
    w = y * (3 + y * (3 + y))
    assert sp.expand(v - 1 - w) == 0
    d = a - sp.Rational(1, 3)
    # v = 1 + w exactly (above), so the textbook acceptance exponent δ − δv + δ log v equals:
    vv = sp.Symbol("v", positive=True)
    textbook = (d - d * vv + d * sp.log(vv)).subs(vv, 1 + w)
    assert sp.simplify(textbook - d * (sp.log(1 + w) - w)) == 0
    assert sp.expand((2 * d * v - 2 * a) - (2 * d * w - sp.Rational(2, 3))) == 0


def verify() -> None:
    """Raise AssertionError if any step of the reduced-engine derivation fails."""
    _pythagoras()
    _sequential_norm()
    _moments()
    _frame()
    _marsaglia_tsang()


if __name__ == "__main__":
    verify()
    print("ok:", STATEMENT)
