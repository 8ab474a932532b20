"""The layers of dpbasin, checked mechanically (the arrows of CONTRIBUTING.md).

* ``dptheory`` (pure formulas) imports nothing else of the project;
* the engines and run machinery (``simulations.basin``, ``simulations.nn``, ``simulations.common``)
  never import an experiment (a top-level ``simulations`` module) or ``paper``; the one exception is
  the command dispatcher ``simulations/nn/__main__.py``;
* ``paper`` (figures and reports) never imports ``simulations``: figures read result files only;
* an experiment's ``run()`` never imports ``paper`` (figures are drawn by ``main`` after the results
  are written);
* no module imports a private (underscore) name from another project module.

Every import counts, also the ones inside functions (the AST is read, nothing is executed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dptheory", "simulations", "proofs", "paper")
EXPERIMENTS = tuple(p.stem for p in (ROOT / "simulations").glob("*.py") if p.stem not in ("__init__", "__main__"))


def _modules() -> list[tuple[str, Path]]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            out.append((".".join(rel.parts).removesuffix(".__init__"), path))
    return out


def _imports(tree: ast.AST, module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import statement in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = module.split(".")[: -node.level]
                base = ".".join(parts + ([base] if base else []))
            found.append((base, [a.name for a in node.names], node.lineno))
    return found


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _targets(base: str, names: list[str]) -> list[str]:
    """The project modules an import statement reaches (``from simulations import basin_dim`` → both)."""
    return [base] + [f"{base}.{n}" for n in names]


MODULES = _modules()
# Modules still importing private names of others (none).


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_layering(module, path):
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for base, names, line in _imports(tree, module):
        targets = _targets(base, names)
        if _is_under(module, "dptheory"):
            bad += [f"{line}: {t}" for t in targets if any(_is_under(t, p) for p in ("simulations", "paper", "proofs"))]
        engine = any(_is_under(module, p) for p in ("simulations.basin", "simulations.nn", "simulations.common"))
        if engine and module != "simulations.nn.__main__":
            experiments = [f"simulations.{e}" for e in EXPERIMENTS]
            bad += [f"{line}: {t}" for t in targets if any(_is_under(t, e) for e in experiments)]
            bad += [f"{line}: {t}" for t in targets if _is_under(t, "paper")]
        if _is_under(module, "paper"):
            bad += [f"{line}: {t}" for t in targets if _is_under(t, "simulations")]
    assert not bad, f"{module} imports across a layer: {bad}"


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_no_private_names_cross_modules(module, path):
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for base, names, line in _imports(tree, module):
        if not any(_is_under(base, p) for p in PACKAGES):
            continue
        bad += [f"{line}: {base}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
        bad += [f"{line}: {base}" for part in base.split(".") if part.startswith("_") and not part.startswith("__")]
    assert not bad, f"{module} imports private names of other modules: {bad}"


@pytest.mark.parametrize("name", [e for e in EXPERIMENTS if e not in ("net_common",)])
def test_experiment_run_never_imports_paper(name):
    tree = ast.parse((ROOT / "simulations" / f"{name}.py").read_text())
    runs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
    for fn in runs:
        for base, names, line in _imports(fn, f"simulations.{name}"):
            assert not any(_is_under(t, "paper") for t in _targets(base, names)), (
                f"{name}.run imports paper (line {line})"
            )


def test_the_checks_can_fail():
    """The checkers see imports inside functions and relative imports (guards against a vacuous test)."""
    tree = ast.parse("def f():\n    from simulations.basin_dim import run\n    from ._x import _y\n")
    found = _imports(tree, "dptheory.sub.mod")
    assert ("simulations.basin_dim", ["run"], 2) in found and ("dptheory.sub._x", ["_y"], 3) in found
