"""Result folders: ``config.json``, metrics (``.json``/``.npz``) and ``env.json``, written atomically.

Results are files; figures only read them. A folder is assembled under a temporary sibling name
and renamed into place only when complete, so an interrupted or failed run never leaves a
half-written result folder (nor the temporary sibling: the final rename is inside the cleanup).

Output paths are checked before any work (:func:`check_output_dir`): not empty, not the current
folder or one of its parents, not a symbolic link, not through or onto a file, a name short enough
for the file system once the temporary suffixes are added, a writable parent on a file system with
space left, and never an existing folder that is not a result folder (it would be replaced).
:func:`read_json` reads untrusted results files: a file that is not UTF-8 JSON (or not of the
expected type) is a ``ValueError`` naming it.
"""

from __future__ import annotations

import contextlib
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


# room left in a file name for the suffixes written beside a result folder: ".NAME.tmp-XXXXXXXX",
# ".NAME.old-PID", "NAME.checkpoint.pt.tmp-PID", "NAME.partial.json"
NAME_SUFFIX_ROOM = 40
RESULT_MARKERS = ("config.json", "metrics.json", "manifest.json")


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of ``path`` (itself included) that exists; a path through a file stops there."""
    probe = path
    while True:
        try:
            if probe.exists() or probe.is_symlink():
                return probe
        except OSError as exc:  # e.g. a parent without search permission
            raise UsageError(f"output path {str(path)!r} cannot be inspected: {exc.strerror or exc}") from None
        if probe.parent == probe:
            return probe
        probe = probe.parent


def check_output_dir(path: str | os.PathLike[str], *, replace: bool = True) -> Path:
    """Fail fast (UsageError → exit 2) if a result folder cannot be created at ``path``; return it.

    Refused, each with one line naming the path: an empty path; the current folder or one of its
    ancestors (``.``, ``..``, ``/``); a symbolic link (dangling or not: the atomic replacement would
    swap the link, not its target); a path through or onto an existing file; a name too long for the
    file system once the temporary suffixes are added (:data:`NAME_SUFFIX_ROOM`); a parent without
    write permission; a full file system; and — with ``replace`` (a result folder is replaced
    atomically, the old one deleted) — an existing folder that is neither empty nor a result folder
    (none of :data:`RESULT_MARKERS` in it): a mistyped ``--out $HOME`` must never delete a home.
    ``replace=False`` is for a container folder that is written into, not replaced (``gpu_validate``).
    """
    text = os.fspath(path) if not isinstance(path, (str, Path)) else str(path)
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"output path must be a non-empty folder name, got {text!r}")
    if "\x00" in text:
        raise UsageError(f"output path must not contain a NUL byte, got {text!r}")
    for part in Path(text).parts:
        if len(os.fsencode(part)) > 255:
            raise UsageError(f"output path {text[:60]!r}... has a name longer than the file system allows (255 bytes)")
    try:
        return _check_output_dir(text, replace=replace)
    except OSError as exc:  # a probe the file system refuses (a name too long for it, a loop of links, ...)
        raise UsageError(f"output path {text[:80]!r} cannot be inspected: {exc.strerror or exc}") from None


def _check_output_dir(text: str, *, replace: bool) -> Path:
    out = Path(text)
    try:
        resolved = out.resolve(strict=False)
        cwd = Path.cwd().resolve()
    except (OSError, RuntimeError) as exc:
        raise UsageError(f"output path {text!r} cannot be resolved: {exc}") from None
    if resolved == cwd or resolved in cwd.parents or out.name in ("", ".", ".."):
        raise UsageError(f"output path {text!r} is the current folder or one of its parents; give a new folder name")
    if out.is_symlink():
        state = "a dangling symbolic link" if not out.exists() else "a symbolic link"
        raise UsageError(f"output path {text!r} is {state}; give a real folder path")
    probe = _existing_ancestor(out.parent if str(out.parent) else Path("."))
    if not probe.is_dir():
        raise UsageError(f"output path {text!r} is not writable: {str(probe)!r} is not a directory")
    limit = _name_max(probe)
    for part in out.parts:
        if len(os.fsencode(part)) > limit:
            raise UsageError(f"output path {text!r} has a name longer than the file system allows ({limit} bytes)")
    if len(os.fsencode(out.name)) > limit - NAME_SUFFIX_ROOM:
        raise UsageError(
            f"output folder name {out.name[:40]!r}... is {len(os.fsencode(out.name))} bytes; at most "
            f"{limit - NAME_SUFFIX_ROOM} are allowed (room for the temporary suffixes)"
        )
    if len(os.fsencode(str(resolved))) > 4000:
        raise UsageError(f"output path {text[:60]!r}... is longer than 4000 bytes")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"output path {text!r} is not writable (no write permission in {str(probe)!r})")
    try:
        if shutil.disk_usage(probe).free < 2**20:
            raise UsageError(f"output path {text!r}: the file system of {str(probe)!r} is full")
    except OSError:
        pass
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"output path {text!r} exists and is not a directory")
        if replace:
            try:
                entries = [p.name for p in out.iterdir()]
            except OSError as exc:
                raise UsageError(f"output folder {text!r} cannot be read: {exc.strerror or exc}") from None
            if entries and not any(m in entries for m in RESULT_MARKERS):
                raise UsageError(
                    f"output folder {text!r} exists and is not a result folder (no {' or '.join(RESULT_MARKERS[:2])}); "
                    "it would be replaced: choose another --out"
                )
            if not os.access(out, os.W_OK | os.X_OK):
                raise UsageError(f"output folder {text!r} is not writable")
    return out


@contextmanager
def result_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` atomically, on error it is deleted.

    The whole sequence — writing into the temporary sibling ``.NAME.tmp-XXXX``, moving an existing
    result folder aside, the final rename, deleting the old folder — is inside the cleanup: if any
    step fails (a full disk, a rename refused), the temporary folder is removed, a folder that was
    moved aside is put back, and the error propagates. Nothing but the finished folder is left.

    >>> import tempfile, pathlib
    >>> base = pathlib.Path(tempfile.mkdtemp())
    >>> with result_folder(base / "run") as tmp:
    ...     _ = (tmp / "x.json").write_text("{}")
    >>> sorted(p.name for p in (base / "run").iterdir())
    ['x.json']
    """
    out = check_output_dir(path)
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()][::-1]  # outermost first
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        _remove_empty(created)
        raise UsageError(f"cannot create the result folder {str(out)!r}: {exc.strerror or exc}") from None
    old = None
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            with contextlib.suppress(OSError):
                old.rename(out)
        _remove_empty(created)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders this call created (innermost first), if they are still empty."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary sibling and a rename (never half-written)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


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


MAX_JSON_BYTES = 256 * 2**20


def read_json(path: str | os.PathLike[str], *, expect: type | None = None) -> Any:
    """Read a JSON results file. A missing file is a ``FileNotFoundError`` naming the path; a file that is
    not UTF-8 JSON (or, with ``expect``, whose top level is not of that type, e.g. ``dict``) or is
    larger than 256 MiB is a ``ValueError`` naming the file and what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"result file not found: {str(p)!r}")
    try:
        size = p.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ValueError(f"{str(p)!r} is {size} bytes, too large for a results file")
        text = p.read_bytes().decode("utf-8")
        value = json.loads(text)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{str(p)!r} is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(p)!r} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise ValueError(f"{str(p)!r} is nested too deeply to be a results file") from None
    if expect is not None and not isinstance(value, expect):
        raise ValueError(f"{str(p)!r} holds a JSON {type(value).__name__}, expected a {expect.__name__}")
    return value
