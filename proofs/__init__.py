"""proofs: executable sympy derivations of every closed form used by ``dptheory``.

Each module ``proofs/<name>.py`` (named like the dptheory function it backs) defines

* ``STATEMENT`` — one line: the result in symbols, and the dptheory function it backs;
* ``verify()`` — a symbolic check (``simplify(lhs - rhs) == 0`` or equivalent) that raises
  ``AssertionError`` when the derivation fails;
* ``CODE_LINKS`` — its closed forms as plain functions, each wired to the ``dptheory`` function that
  implements it (:class:`proofs.links.CodeLink`: symbol ↔ argument map, bounds, tolerance);
  ``tests/test_proof_code_links.py`` checks every link on random draws. A proof that backs no closed
  form of the code (e.g. a random engine's law) says why in ``NO_CODE_LINK``.

``python -m proofs`` runs them all and prints one line per result.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def proof_modules() -> list[ModuleType]:
    """All proof modules, sorted by name (private modules and the runner excluded)."""
    import proofs

    mods = []
    for info in sorted(pkgutil.iter_modules(proofs.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"proofs.{info.name}")
        if hasattr(mod, "verify") and hasattr(mod, "STATEMENT"):
            mods.append(mod)
    return mods
