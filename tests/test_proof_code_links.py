"""Every proof's closed form agrees with the dptheory function it backs (``proofs.links``).

For each :class:`proofs.links.CodeLink` of every proof module, hypothesis draws the proof symbols
inside their stated bounds (rejecting draws outside the link's ``valid`` region), evaluates the
proof's closed form and the resolved ``dptheory`` function on the mapped arguments, and asserts
agreement to the link's tolerance (≈ 1e-12 for closed forms).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from proofs import proof_modules
from proofs.links import CodeLink, resolve

LINKS = [
    (m.__name__.split(".")[-1], i, link) for m in proof_modules() for i, link in enumerate(getattr(m, "CODE_LINKS", ()))
]


def _strategy(link: CodeLink) -> st.SearchStrategy:
    parts = {}
    for name, (lo, hi) in link.symbols.items():
        if name in link.integer:
            parts[name] = st.integers(int(lo), int(hi))
        else:
            parts[name] = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    return st.fixed_dictionaries(parts)


@pytest.mark.parametrize("name,index,link", LINKS, ids=[f"{n}[{i}]:{lk.function.split('.')[-1]}" for n, i, lk in LINKS])
def test_closed_form_matches_code(name, index, link):
    function = resolve(link.function)

    @settings(max_examples=25, deadline=None, derandomize=True)
    @given(values=_strategy(link))
    def check(values):
        assume(link.valid(**values))
        expected = float(link.closed_form(**values))
        got = float(link.output(function(**link.arguments(**values))))
        assume(math.isfinite(expected))
        assert got == pytest.approx(expected, rel=link.rtol, abs=link.atol), (values, got, expected, link.note)

    check()


def test_every_proof_module_is_wired_to_code():
    """Each proof names at least one dptheory function it backs (or says why it cannot be linked)."""
    missing = [
        m.__name__ for m in proof_modules() if not getattr(m, "CODE_LINKS", ()) and not getattr(m, "NO_CODE_LINK", "")
    ]
    assert not missing, f"proof modules without a CodeLink: {missing}"


def test_a_wrong_closed_form_is_caught():
    """Guard against a vacuous test: perturbing a closed form by 1e-9 relative must fail."""
    _, _, link = LINKS[0]
    values = {
        k: (lo + hi) / 2 if k not in link.integer else int((lo + hi) // 2) for k, (lo, hi) in link.symbols.items()
    }
    if not link.valid(**values):
        pytest.skip("midpoint outside the valid region")
    got = float(link.output(resolve(link.function)(**link.arguments(**values))))
    assert got != pytest.approx(float(link.closed_form(**values)) * (1 + 1e-9), rel=link.rtol, abs=link.atol)
    assert np.isfinite(got)
