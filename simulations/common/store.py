"""Content-addressed results: a run's identity is a hash of its config and of the code it runs.

A **run key** is the SHA-256 of

* the experiment's name,
* its config, canonicalised by :func:`canonical` — every field except the *execution fields*
  (``out``, ``quiet`` and any field whose metadata says ``execution=True``, e.g. ``workers``,
  ``scheduler``): where a run is written and how it is scheduled never change its numbers;
* the **code-relevant version** (:func:`code_version`): the package version, the Python minor
  version, and a hash of the source of every project module the experiment's module imports,
  transitively (:func:`import_closure`, read from the AST — imports inside functions count), limited
  to the packages that compute numbers, ``dptheory`` and ``simulations``. Each file enters as its
  AST with docstrings removed (``ast.dump``), so comments, docstrings and formatting do not change
  the key while any change to code does. ``paper`` (figures) and ``proofs`` are outside the key:
  redrawing never reruns. Third-party versions (numpy, numba, torch) are recorded in ``env.json``
  but are not part of the key; delete a folder (or pass ``--rerun`` to ``python -m paper``) to
  recompute after an upgrade.

Folders. A config whose ``out`` contains the placeholder ``{config}`` is written to ``out`` with
the placeholder replaced by the first 12 hex digits of its key (:func:`resolve_out`), so two
different configs never share a folder and the same config always lands in the same one. Each
result folder carries ``run.json`` (key, code version, execution) next to ``config.json``;
:func:`is_complete` tells whether a folder already holds the run for a key (then it is reused).

Cells. While a sweep runs, each finished cell is pickled into a hidden sibling of the result
folder, ``.<name>.cells/`` (:class:`CellCache`), as soon as it completes; a rerun after a crash
loads the finished cells instead of recomputing them, and the cache is removed once the result
folder is complete. The pickles are an internal cache read only by this package (never results).

Example:
    >>> from dataclasses import dataclass, field
    >>> @dataclass(frozen=True)
    ... class Demo:
    ...     d: int = 3
    ...     out: str = "results/demo/{config}"
    >>> digest(canonical(Demo())) == digest(canonical(Demo(out="elsewhere")))
    True
    >>> digest(canonical(Demo())) == digest(canonical(Demo(d=4)))
    False
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import hashlib
import json
import math
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CODE_PACKAGES",
    "PLACEHOLDER",
    "CellCache",
    "canonical",
    "code_version",
    "digest",
    "import_closure",
    "is_complete",
    "module_name",
    "read_run_record",
    "resolve_out",
    "run_key",
    "run_record",
    "write_run_record",
]

ROOT = Path(__file__).resolve().parents[2]
CODE_PACKAGES = ("dptheory", "simulations")
PLACEHOLDER = "{config}"
ALWAYS_EXECUTION = ("out", "quiet")
RUN_RECORD = "run.json"


def execution_fields(config: Any) -> set[str]:
    """Names of the fields of dataclass ``config`` that do not change its numbers."""
    names = set(ALWAYS_EXECUTION)
    for f in dataclasses.fields(config):
        if f.metadata.get("execution"):
            names.add(f.name)
    return names


def canonical(obj: Any) -> Any:
    """A JSON-serialisable, order-independent image of ``obj`` that determines it for hashing.

    Dataclasses become ``{"__type__": qualified name, fields…}`` without their execution fields;
    floats are written with ``repr`` (exact round trip; ``inf``/``nan`` as text); numpy arrays by the
    SHA-256 of their bytes with dtype and shape; enums by their value; tuples and lists as lists.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        skip = execution_fields(obj)
        out: dict[str, Any] = {"__type__": f"{module_name(type(obj).__module__)}.{type(obj).__qualname__}"}
        for f in dataclasses.fields(obj):
            if f.name not in skip:
                out[f.name] = canonical(getattr(obj, f.name))
        return out
    if isinstance(obj, enum.Enum):
        return canonical(obj.value)
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        v = float(obj)
        return repr(v) if math.isfinite(v) else str(v)
    if isinstance(obj, str) or obj is None:
        return obj
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return {"__array__": hashlib.sha256(arr.tobytes()).hexdigest(), "dtype": arr.dtype.str, "shape": arr.shape}
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"{module_name(obj.__module__)}.{obj.__qualname__}"
    raise TypeError(f"cannot canonicalise {type(obj).__name__} for a run key")


def digest(obj: Any) -> str:
    """SHA-256 (hex) of the canonical JSON text of ``obj`` (already canonical or plain JSON)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _module_file(name: str) -> Path | None:
    """The source file of project module ``name`` (None if it is not a file of a code package)."""
    parts = name.split(".")
    if parts[0] not in CODE_PACKAGES:
        return None
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


@functools.cache
def import_closure(module: str) -> tuple[str, ...]:
    """Every project module (of :data:`CODE_PACKAGES`) that ``module`` imports, transitively, itself
    and the parent packages included (their ``__init__`` runs on import); sorted.

    >>> "simulations.common.store" in import_closure("simulations.common.store")
    True
    """
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        tree = ast.parse(path.read_text(), filename=str(path))
        todo.extend(_imported(tree, name, path.name == "__init__.py"))
    return tuple(sorted(seen))


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            first = body[0] if body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(path: Path) -> str:
    """SHA-256 of a source file's AST without docstrings (comments and layout do not count)."""
    tree = _strip_docstrings(ast.parse(path.read_text(), filename=str(path)))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("dpbasin")
    except Exception:
        return "unknown"


def module_name(name: str) -> str:
    """The importable name of module ``name`` (``__main__`` of ``python -m pkg.mod`` → ``pkg.mod``)."""
    if name == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name:
            return spec.name
    return name


def code_version(module: str) -> dict[str, Any]:
    """The code-relevant version of ``module``: package version, Python minor version and the hash
    of the import closure's sources (with the per-file hashes, so a changed key can be explained)."""
    return _code_version(module_name(module))


@functools.cache
def _code_version(module: str) -> dict[str, Any]:
    files = {name: source_digest(_module_file(name)) for name in import_closure(module)}  # type: ignore[arg-type]
    return {
        "package": package_version(),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "sources": digest(files),
        "modules": files,
    }


def run_key(config: Any, *, experiment: str, module: str) -> str:
    """The run key of ``config`` for ``experiment`` (defined in ``module``)."""
    code = code_version(module)
    return digest(
        {
            "experiment": experiment,
            "config": canonical(config),
            "code": {k: code[k] for k in ("package", "python", "sources")},
        }
    )


def resolve_out(config: Any, *, experiment: str, module: str) -> Path:
    """``config.out`` with ``{config}`` replaced by the first 12 hex digits of the run key."""
    out = str(config.out)
    if PLACEHOLDER in out:
        out = out.replace(PLACEHOLDER, run_key(config, experiment=experiment, module=module)[:12])
    return Path(out)


def run_record(config: Any, *, experiment: str, module: str, execution: dict[str, Any] | None = None) -> dict:
    """The contents of ``run.json``: key, experiment, code version and how the run was executed."""
    return {
        "experiment": experiment,
        "key": run_key(config, experiment=experiment, module=module),
        "code_version": code_version(module),
        "execution": execution or {},
    }


def write_run_record(folder: Path, record: dict[str, Any]) -> None:
    (Path(folder) / RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def read_run_record(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    path = Path(folder) / RUN_RECORD
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_complete(folder: str | os.PathLike[str], key: str) -> bool:
    """True if ``folder`` holds the finished run with run key ``key`` (result folders are written
    atomically, so a folder with a matching ``run.json`` and ``metrics.json`` is complete)."""
    record = read_run_record(folder)
    if not record:
        return False
    return record.get("key") == key and (Path(folder) / "metrics.json").is_file()


class CellCache:
    """Finished cells of one sweep, one pickle per cell key, in ``.<name>.cells/`` beside ``out``.

    Writes are atomic (a temporary file renamed into place), so a crash never leaves a torn cell.
    """

    def __init__(self, out: str | os.PathLike[str]):
        out = Path(out)
        self.folder = out.parent / f".{out.name}.cells"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.pkl"

    def get(self, key: str) -> tuple[bool, Any]:
        """(True, value) if the cell ``key`` is stored, else (False, None)."""
        p = self.path(key)
        if not p.is_file():
            return False, None
        try:
            with p.open("rb") as fh:
                return True, pickle.load(fh)
        except Exception:  # a torn or stale pickle is recomputed, never trusted
            return False, None

    def put(self, key: str, value: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.folder)
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, self.path(key))

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
