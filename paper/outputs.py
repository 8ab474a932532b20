"""Command-line plumbing shared by the paper's rendering commands (``paper.claims_doc``, ``paper.readme``).

Result folders and documents are untrusted input: :func:`read_metrics` reads ``metrics.json`` with the
safe JSON reader (a malformed file is a ``ValueError`` naming it), :func:`output_file` checks a file
to be written before anything is computed, :func:`write_text_atomic` replaces a file in one rename
(an interrupted write never leaves half a document), :class:`OneLineParser` reports a usage error
in one line and :func:`report_error` any other failure (exit status 2 for bad input, 1 with
"internal error" for a bug; ``DPBASIN_TRACEBACK=1`` re-raises it). Figures and reports never import
``simulations``: these are the paper's own.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["OneLineParser", "output_file", "read_metrics", "report_error", "write_text_atomic"]


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def read_metrics(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``folder/metrics.json`` as a dict (``ResultError``, a ``ValueError``, naming the file if it is not)."""
    from paper.figures import read_json_file

    return read_json_file(Path(folder) / "metrics.json")


def report_error(prog: str, exc: BaseException) -> int:
    """Print the one-line report of ``exc`` on stderr and return the exit status (module docstring)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, (ValueError, OSError)):
        sys.stderr.write(f"{prog}: error: {text}\n")
        return 2
    if os.environ.get("DPBASIN_TRACEBACK"):
        raise exc
    sys.stderr.write(f"{prog}: internal error: {type(exc).__name__}: {text} (a bug: please report it)\n")
    return 1


def output_file(flag: str, value: str) -> Path:
    """``value`` as a file that can be written: not empty, not a folder, in an existing writable folder."""
    path = Path(value)
    if not value or path.is_dir() or not path.parent.is_dir():
        raise ValueError(f"{flag} must be a file in an existing folder, got {value!r}")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{flag} {value!r} cannot be written (permissions)")
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling, then rename it onto ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
