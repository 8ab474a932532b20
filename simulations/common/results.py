"""Result folders: ``config.json``, metrics (``.json``/``.npz``) and ``env.json``, written atomically.

Results are files; figures only read them. A folder is assembled under a temporary
sibling name and renamed into place only when complete, so an interrupted or failed run never
leaves a half-written result folder.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from simulations.common.cli import UsageError


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, enums, numpy scalars/arrays, tuples and non-finite floats to JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            rev = out.stdout.strip()
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=here,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def environment() -> dict[str, Any]:
    """Versions of Python and of the numerical packages, platform and git revision."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "git_revision": _git_revision(),
        "argv": sys.argv,
    }
    for name in (
        "numpy",
        "scipy",
        "numba",
        "sympy",
        "matplotlib",
        "torch",
        "opacus",
        "dp_accounting",
        "mnist1d",
        "sklearn",
    ):
        mod = sys.modules.get(name)
        if mod is not None:
            env[name] = getattr(mod, "__version__", "unknown")
    try:
        import numba

        env["numba_threads"] = numba.get_num_threads()
    except Exception:  # pragma: no cover - numba always importable in dpbasin
        pass
    return env


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Fail fast (UsageError → exit 2) if a result folder cannot be created at ``path``."""
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"output path {str(out)!r} is not writable: {str(probe)!r} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"output path {str(out)!r} is not writable")
    if out.exists() and not out.is_dir():
        raise UsageError(f"output path {str(out)!r} exists and is not a directory")
    return out


@contextmanager
def result_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` atomically, on error it is deleted.

    >>> import tempfile, pathlib
    >>> base = pathlib.Path(tempfile.mkdtemp())
    >>> with result_folder(base / "run") as tmp:
    ...     _ = (tmp / "x.json").write_text("{}")
    >>> sorted(p.name for p in (base / "run").iterdir())
    ['x.json']
    """
    out = check_output_dir(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (via :func:`to_jsonable`)."""
    path.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_results(
    folder: Path, *, config: Any, metrics: dict[str, Any], arrays: dict[str, np.ndarray] | None = None
) -> None:
    """Write ``config.json``, ``metrics.json``, optional ``metrics.npz`` and ``env.json`` into ``folder``."""
    write_json(folder / "config.json", config)
    write_json(folder / "metrics.json", metrics)
    if arrays:
        np.savez_compressed(folder / "metrics.npz", allow_pickle=False, **{k: np.asarray(v) for k, v in arrays.items()})
    write_json(folder / "env.json", environment())


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON results file; a missing file is a FileNotFoundError naming the path."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"result file not found: {str(p)!r}")
    return json.loads(p.read_text())
