"""``python -m paper``: regenerate the study — run what is not stored, draw every figure, write the report.

With no folder arguments it launches ``python -m simulations.study`` as a separate process (figures
never import the simulations), which runs every experiment of the study whose result is not stored
yet (content-addressed folders under ``--results``), then draws every figure as PNG and PDF into
``--build`` and writes ``--build``/report.md. With folder arguments it only redraws those folders.
A missing or malformed folder gives one line on stderr and exit status 2.

Example::

    python -m paper --quick                          # CI scale, < 3 minutes on 2 cores
    python -m paper                                  # the full study (13 minutes on 2 cores)
    python -m paper --only 3                         # claim 3 only (or an experiment / figure name)
    python -m paper --workers 0                      # serially in one process (default: one worker per core)
    python -m paper --scheduler tcp://host:8786      # ... or over a running Dask scheduler
    python -m paper results/basin_dim/0123456789ab   # redraw one result folder (PNG and PDF)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from paper.figures import FIGURES, ResultError, draw, load, staged


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


NETWORK_FIGURES = ("net_ablate", "net_switch", "net_width", "net_prune", "net_epsilon", "net_basin")


def figure_experiment(name: str) -> str:
    """The experiment a ``--only`` item names: a figure name maps to its experiment; others pass through."""
    for experiment, fns in FIGURES.items():
        if name in {fn.__name__ for fn in fns}:
            return experiment
    return name


def _paper_code_hash() -> str:
    """Hash of this package's source: figures drawn by the same code from the same run are not redrawn."""
    import hashlib

    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(here.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _redraw(folders: list[str], formats: tuple[str, ...]) -> int:
    """Redraw ``folders``: every folder is read before anything is drawn, and the figure files of the
    call appear together at the end (or, on an error, none): one line and exit status 2."""
    written: list[Path] = []
    folder = None
    try:
        with staged():
            for folder in folders:
                load(folder, network_ok=True)
            for folder in folders:
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


def _study(args: argparse.Namespace, formats: tuple[str, ...]) -> int:
    scale = "quick" if args.quick else "full"
    only = [figure_experiment(s.strip()) for s in args.only.split(",") if s.strip()]
    cmd = [sys.executable, "-m", "simulations.study", "--results", args.results]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--only", ",".join(only)] if only else []
    cmd += ["--workers", str(args.workers)] if args.workers is not None else []
    cmd += ["--scheduler", args.scheduler] if args.scheduler else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    cmd += ["--rerun"] if args.rerun else []
    cmd += ["--quiet"] if args.quiet else []
    try:
        rc = subprocess.call(cmd)
    except KeyboardInterrupt:
        sys.stderr.write("python -m paper: interrupted (finished cells are stored; run again to resume)\n")
        return 130
    if rc == 2:  # a usage error, already reported on one line
        return 2
    manifest_path = Path(args.results) / f"study-{scale}.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        sys.stderr.write(f"python -m paper: error: the study wrote no readable manifest at {str(manifest_path)!r}\n")
        return 2
    from paper.report import write_report

    build = Path(args.build)
    build.mkdir(parents=True, exist_ok=True)
    figures: dict[str, list[str]] = {}
    failures: dict[str, str] = {}
    stamp_file = build / ".figures.json"
    try:
        stamps = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        stamps = {}
    code = _paper_code_hash()
    for e in manifest["experiments"]:
        if e["status"] != "ok":
            continue
        stamp = {"key": e["key"], "paper": code, "formats": list(formats)}
        old = stamps.get(e["name"], {})
        if not args.rerun and old.get("stamp") == stamp and all(Path(p).is_file() for p in old.get("files", [])):
            figures[e["name"]] = [p for p in old["files"] if p.endswith(".png")]  # same results, same code
            continue
        try:
            paths = draw(e["folder"], formats=formats, out=build)
        except Exception as exc:  # a figure failure never hides the results
            failures[e["name"]] = f"{type(exc).__name__}: {exc}"
            sys.stderr.write(
                f"python -m paper: warning: figures of {e['name']} not drawn ({exc}); results are in {e['folder']}\n"
            )
            continue
        figures[e["name"]] = [str(p) for p in paths if p.suffix == ".png"]
        stamps[e["name"]] = {"stamp": stamp, "files": [str(p) for p in paths]}
    stamp_file.write_text(json.dumps(stamps, indent=1) + "\n")
    report = write_report(manifest, figures, build, failures=failures)
    n = sum(len(v) for v in figures.values())
    print(f"report: {report} ({n} figures, {' and '.join(f.upper() for f in formats)}, in {build})")
    return 0 if rc == 0 and not failures else 1


def main(argv: list[str] | None = None) -> int:
    """Regenerate the study (no folders) or redraw the given result folders."""
    parser = _OneLineParser(
        prog="python -m paper", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "folders", nargs="*", metavar="RESULTS_DIR", help="result folders to redraw (none: the whole study)"
    )
    parser.add_argument("--format", choices=("png", "pdf", "both"), default="both", help="file format(s) to write")
    parser.add_argument("--quick", action="store_true", help="the reduced (CI) scale of the study")
    parser.add_argument("--only", default="", help="comma list of claims (1-4), experiments or figure names")
    parser.add_argument("--results", default="results", help="folder of the result folders and manifests")
    parser.add_argument("--build", default="paper/build", help="folder for the figures and report.md")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Dask LocalCluster worker processes (0: serial; default: one per CPU core, see simulations.study)",
    )
    parser.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    parser.add_argument("--threads", type=int, default=0, help="numba/torch threads per worker (0: cores / workers)")
    parser.add_argument("--rerun", action="store_true", help="recompute stored results too")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    formats = ("png", "pdf") if args.format == "both" else (args.format,)
    if args.folders:
        return _redraw(args.folders, formats)
    return _study(args, formats)


if __name__ == "__main__":
    raise SystemExit(main())
