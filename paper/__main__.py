"""``python -m paper RESULTS_DIR...``: redraw every figure from its result folder (files only).

At least one folder is required: without one the command prints its one-line usage error and exits
with status 2 (there is no default folder to draw). A missing or malformed folder (metrics.json that
is not UTF-8 JSON, a list where an object belongs, strings or null where numbers belong, a corrupt
metrics.npz) gives one line on stderr naming the file and exit status 2; nothing is half-drawn.
``--help`` / ``-h`` print the usage.

Example::

    python -m paper results/basin_dim results/recovery            # PNG and PDF
    python -m paper --format png results/switch
"""

from __future__ import annotations

import argparse
import os
import sys

from paper.figures import ResultError, draw, load, staged


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    """Redraw the figures of the given result folders; print the files written."""
    parser = _OneLineParser(
        prog="python -m paper", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", metavar="RESULTS_DIR", help="result folders to draw")
    parser.add_argument("--format", choices=("png", "pdf", "both"), default="both", help="file format(s) to write")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    formats = ("png", "pdf") if args.format == "both" else (args.format,)
    written: list = []
    folder = None
    try:
        with staged():  # every figure appears at the end, or none does
            for folder in args.folders:
                load(folder)  # each folder is readable before anything is drawn
            for folder in args.folders:
                written.extend(draw(folder, formats=formats))
    except (ResultError, OSError) as exc:
        sys.stderr.write(f"python -m paper: error: {' '.join(str(exc).split())}\n")
        return 2
    except Exception as exc:  # a bug, not bad input: still one line (DPBASIN_TRACEBACK=1 shows it)
        if os.environ.get("DPBASIN_TRACEBACK"):
            raise
        sys.stderr.write(
            f"python -m paper: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
            f"(drawing {folder!r}; a bug: please report it)\n"
        )
        return 1
    for path in dict.fromkeys(written):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
