"""mypy and ruff on the whole project, so that a type or lint error fails the test run.

``dptheory`` is checked with the strict flags of its ``[tool.mypy]`` override in pyproject.toml, the
other packages with plain mypy (``files`` of ``[tool.mypy]``); ruff lint and format run on every file.
The checks are skipped where mypy or ruff is not installed (they come with ``pip install -e ".[lint]"``);
mypy's cache lives in ``.pytest_cache/mypy``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TYPED = ["dptheory", "proofs", "paper", "simulations"]
LINTED = ["."]

# The per-module flags that `mypy --strict` switches on (mypy 2.4; warn_unused_ignores and
# warn_redundant_casts are set globally). A `strict = true` inside an override would turn strict mode
# on for every module, not only the matched ones.
STRICT_FLAGS = {
    "disallow_any_generics": True,
    "disallow_subclassing_any": True,
    "disallow_untyped_calls": True,
    "disallow_untyped_defs": True,
    "disallow_incomplete_defs": True,
    "check_untyped_defs": True,
    "disallow_untyped_decorators": True,
    "warn_return_any": True,
    "implicit_reexport": False,
    "strict_equality": True,
    "extra_checks": True,
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_dptheory_override_spells_out_the_strict_flags():
    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert "strict" not in config, "strict = true in [tool.mypy] would make every package strict"
    overrides = config["overrides"]
    assert all("strict" not in o for o in overrides), "a per-module strict = true applies to every module"
    (theory,) = [o for o in overrides if "dptheory.*" in o["module"]]
    assert {k: theory.get(k) for k in STRICT_FLAGS} == STRICT_FLAGS
    assert config["warn_unused_ignores"] and config["warn_redundant_casts"]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed (extra 'lint')")
def test_mypy_passes_on_the_whole_project():
    res = _run("mypy", "--cache-dir", str(ROOT / ".pytest_cache" / "mypy"), *TYPED)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff not installed (extra 'lint')")
def test_ruff_lint_and_format_pass_on_every_file():
    for args in (("check", "--no-cache"), ("format", "--check", "--no-cache")):
        res = _run("ruff", *args, *LINTED)
        assert res.returncode == 0, res.stdout + res.stderr
