"""Command lines generated from one frozen config dataclass.

Every experiment is ``@dataclass(frozen=True) class XConfig`` whose fields carry their help text in
``field(metadata={"help": ...})``. :func:`build_parser` turns it into an ``argparse`` parser
(defaults shown, integers accept ``1e6``, tuples as comma lists, unknown flags are errors), and
:func:`run_main` runs it so that **bad input gives exactly one line on stderr and exit status 2**
— never a traceback, never a half-written result folder.

What :func:`run_main` guarantees, for every command built on it:

* ``--help`` / ``-h`` print the usage and exit 0; a usage error is one line and exit status 2;
* every command also takes ``--max-memory SIZE`` and ``--max-work OPS`` (the resource limits of
  :mod:`simulations.common.resources`; not part of the config, not saved);
* an error raised while validating or running (``ValueError`` and its subclasses — ``UsageError``,
  ``ResourceError``, malformed files —, ``OSError`` such as a full disk or a missing file) becomes
  one line ``<prog>: error: <message>`` (whitespace folded, so a wrapped message stays one line) and
  exit status 2; ``KeyboardInterrupt`` is ``<prog>: interrupted`` and 130;
* anything else is a bug, reported as one line ``<prog>: internal error: <type>: <message>`` and
  exit status 1 (``DPBASIN_TRACEBACK=1`` in the environment re-raises it with its traceback);
* Python warnings and the absl log of dp-accounting (e.g. "_compute_log_a_frac failed to converge",
  an RDP order the accountant skips; ε stays an upper bound over the remaining orders) are
  collected while the command runs and, if it succeeds, printed after it as one line per distinct
  message (``<prog>: warning: ... (×N)``); a failing command prints only its error line.

Example (the whole of a CLI module's ``main``)::

    def main(argv=None) -> int:
        return run_main(MyConfig, run, argv, description=__doc__)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import enum
import logging
import math
import os
import sys
import time
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from simulations.common import resources

C = TypeVar("C")


class UsageError(ValueError):
    """Invalid command-line input (reported as one line, exit status 2)."""


class _OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def parse_int(text: str) -> int:
    """Parse an integer that may be written as ``1e6`` or ``1_000_000``."""
    try:
        value = float(str(text).replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not math.isfinite(value) or value != int(value):
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


def parse_float(text: str) -> float:
    """Parse a float; NaN is rejected (inf is allowed, e.g. for 'no clipping')."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for ``X | None`` annotations."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _scalar_parser(tp: Any) -> Callable[[str], Any]:
    if tp is int:
        return parse_int
    if tp is float:
        return parse_float
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return lambda s: tp(s)
    return parse_text


def parse_text(text: str) -> str:
    """A text value: any string without control characters (a newline or NUL is a usage error)."""
    text = str(text)
    if any(ord(c) < 32 for c in text):
        raise argparse.ArgumentTypeError(f"expected text without control characters, got {text!r}")
    return text


def _tuple_parser(inner: Callable[[str], Any]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        parts = [p for p in str(text).split(",") if p.strip() != ""]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return tuple(inner(p.strip()) for p in parts)

    return parse


def _optional(parser: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if str(text).lower() in ("none", "") else parser(text)

    return parse


def build_parser(
    config_cls: type,
    *,
    prog: str | None = None,
    description: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> argparse.ArgumentParser:
    """An argparse parser with one ``--flag`` per field of the frozen dataclass ``config_cls``.

    ``defaults`` overrides field defaults on the command line only (e.g. a result folder that the
    library function leaves ``None``); unknown names are a programming error (``KeyError``).
    """
    overrides = dict(defaults or {})
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise KeyError(f"defaults name no field of {config_cls.__name__}: {unknown}")
    parser = _OneLineParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        helptext = str(f.metadata.get("help", "")).replace("%", "%%")  # argparse expands %-formats
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        if f.name in overrides:
            default = overrides[f.name]
        tp, optional = _base_type(hints[f.name])
        kwargs: dict[str, Any] = {"default": default, "help": helptext or " ", "dest": f.name}
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        origin = typing.get_origin(tp)
        if origin is tuple:
            inner = typing.get_args(tp)[0]
            conv = _tuple_parser(_scalar_parser(inner))
            kwargs["metavar"] = f"{getattr(inner, '__name__', 'X').upper()}[,...]"
            if isinstance(default, tuple):
                kwargs["default"] = default
        else:
            conv = _scalar_parser(tp)
            if isinstance(tp, type) and issubclass(tp, enum.Enum):
                kwargs["choices"] = list(tp)
                kwargs["metavar"] = "{" + ",".join(m.value for m in tp) + "}"
        if "choices" in f.metadata:
            kwargs["choices"] = list(f.metadata["choices"])
        parser.add_argument(flag, type=_optional(conv) if optional else conv, **kwargs)
    return parser


def parse_config(
    config_cls: type[C],
    argv: Sequence[str] | None,
    *,
    prog: str | None = None,
    description: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> C:
    """Parse ``argv`` into ``config_cls``; the dataclass's own ``__post_init__`` validates values."""
    parser = build_parser(config_cls, prog=prog, description=description, defaults=defaults)
    ns = parser.parse_args(argv)
    return config_cls(**vars(ns))


RESOURCE_FLAGS = {"max_memory": "--max-memory", "max_work": "--max-work"}


def add_resource_flags(parser: argparse.ArgumentParser) -> None:
    """``--max-memory SIZE`` and ``--max-work OPS`` (simulations.common.resources), not config fields."""
    try:
        limits = resources.default_limits()
        mem, work = resources.format_size(limits.memory), f"{limits.work:.2g}"
    except resources.ResourceError:
        mem = work = "see $DPBASIN_MAX_MEMORY / $DPBASIN_MAX_WORK"
    group = parser.add_argument_group("resource limits (not saved with the config)")
    group.add_argument(
        "--max-memory",
        dest="max_memory",
        default=None,
        metavar="SIZE",
        help=f"refuse runs whose largest arrays exceed SIZE, e.g. 512M, 12G (default ${resources.MEMORY_ENV} or "
        f"half the physical memory: {mem})",
    )
    group.add_argument(
        "--max-work",
        dest="max_work",
        default=None,
        metavar="OPS",
        help=f"refuse runs estimated above OPS elementary operations (≈ 1e9 per core-second; default "
        f"${resources.WORK_ENV} or {work})",
    )


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) folded into one space."""
    return " ".join(str(text).split())


def error_line(exc: BaseException) -> str:
    """The one-line message of an expected error: the exception's text, or an ``OSError``'s reason and path."""
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        where = f"{exc.filename!r}" if exc.filename is not None else ""
        if where and exc.filename2 is not None:
            where += f" -> {exc.filename2!r}"
        return one_line(f"{where}: {exc.strerror}" if where else exc.strerror)
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None and str(exc).startswith("[Errno"):
        return one_line(f"{exc.filename!r}: {exc.strerror}")
    return one_line(str(exc) or type(exc).__name__)


TRACEBACK_ENV = "DPBASIN_TRACEBACK"


def report_error(prog: str, exc: BaseException) -> int:
    """Print the one-line report of ``exc`` and return the exit status (module docstring)."""
    if isinstance(exc, KeyboardInterrupt):
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    if isinstance(exc, MemoryError):
        sys.stderr.write(f"{prog}: error: out of memory ({one_line(str(exc)) or 'no detail'}); lower the sizes\n")
        return 2
    if isinstance(exc, (ValueError, OSError)):
        sys.stderr.write(f"{prog}: error: {error_line(exc)}\n")
        return 2
    if os.environ.get(TRACEBACK_ENV):
        raise exc
    sys.stderr.write(
        f"{prog}: internal error: {type(exc).__name__}: {one_line(str(exc))} "
        f"(a bug: please report it with the command line; {TRACEBACK_ENV}=1 shows the traceback)\n"
    )
    return 1


class _AbslCollector(logging.Handler):
    """Counts the absl (dp-accounting) log records of a run by their message template."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        template = one_line(str(record.msg)).split(" after ")[0].split(" with ")[0]
        self.counts[template] = self.counts.get(template, 0) + 1


@contextlib.contextmanager
def collected_diagnostics() -> Iterator[list[str]]:
    """Collect Python warnings and absl log records inside the block; yields the list of summary lines.

    The list is filled when the block ends: one line per distinct warning message (with a count) and
    one per distinct absl message template. Nothing is printed here (:func:`run_main` prints them
    only when the command succeeded).
    """
    lines: list[str] = []
    logger = logging.getLogger("absl")
    collector = _AbslCollector()
    old_propagate, old_level = logger.propagate, logger.level
    logger.addHandler(collector)
    logger.propagate = False
    if logger.level == logging.NOTSET or logger.level > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:  # the filters in force still apply
            try:
                yield lines
            finally:
                seen: dict[str, int] = {}
                for w in caught:
                    text = f"{w.category.__name__}: {one_line(str(w.message))}"
                    seen[text] = seen.get(text, 0) + 1
                for text, n in seen.items():
                    lines.append(text + (f" (×{n})" if n > 1 else ""))
    finally:
        logger.removeHandler(collector)
        logger.propagate, logger.level = old_propagate, old_level
        for template, n in collector.counts.items():
            why = "; the accountant skipped those orders, ε is still an upper bound" if "converge" in template else ""
            lines.append(f"dp-accounting: {template} (×{n}{why})")


def _one_session(config: Any) -> contextlib.AbstractContextManager[Any]:
    """One Dask session for a whole command that asks for ``--workers`` / ``--scheduler`` (every sweep
    of the command then shares its cluster instead of starting one per sweep); else nothing."""
    from simulations.common import fanout

    execution = fanout.execution_of(config)
    if execution.kind == "serial" or fanout.active_execution() == execution:
        return contextlib.nullcontext()
    return fanout.session(execution)


def run_main(
    config_cls: type[C],
    run: Callable[[C], Any],
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
    figure: Callable[[C], Any] | None = None,
    defaults: dict[str, Any] | None = None,
) -> int:
    """Parse, validate and run; bad input → one line on stderr and return 2 (module docstring).

    ``run(config)`` does the work and writes results; it should call
    :func:`simulations.common.results.check_output_dir` and the resource checks of
    :mod:`simulations.common.resources` *before* any long computation so that an unwritable path or
    an impossible size fails fast. ``figure(config)``, if given, draws the figure from the result
    folder **after** ``run`` has returned (the results are durable by then): a figure that fails
    prints one warning naming the result folder and the command still succeeds (exit 0), so a
    plotting problem never destroys or hides a finished run. ``defaults`` overrides field defaults
    on the command line only (:func:`build_parser`).
    """
    prog = prog or Path(sys.argv[0]).name
    try:
        parser = build_parser(config_cls, prog=prog, description=description, defaults=defaults)
        add_resource_flags(parser)
        ns = vars(parser.parse_args(argv))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    limits = {name: ns.pop(name) for name in RESOURCE_FLAGS}
    status = 0
    with collected_diagnostics() as notes:
        try:
            with resources.limits(memory=limits["max_memory"], work=limits["max_work"]):
                config = config_cls(**ns)
                with _one_session(config):
                    run(config)
        except (Exception, KeyboardInterrupt) as exc:
            status = report_error(prog, exc)
    if status:
        return status  # the error line only: warnings of a failed run are not printed
    for line in notes:
        sys.stderr.write(f"{prog}: warning: {line}\n")
    if figure is not None:
        try:
            with warnings.catch_warnings():  # drawing NaN error bars of a short run is not news
                warnings.simplefilter("ignore")
                figure(config)
        except Exception as exc:  # a figure must never turn a finished run into a failure
            where = getattr(config, "out", None)
            sys.stderr.write(
                f"{prog}: warning: figure not drawn ({type(exc).__name__}: {one_line(str(exc))}); results are in {where}\n"
            )
    return 0


class Progress:
    """A minimal progress bar on stderr (silent when ``quiet`` or for work under ~2 s).

    >>> with Progress(total=10, label="sweep", quiet=True) as bar:
    ...     for _ in range(10):
    ...         bar.update()
    """

    def __init__(self, *, total: int, label: str = "", quiet: bool = False, min_seconds: float = 2.0):
        self.total = max(int(total), 1)
        self.label = label
        self.quiet = quiet
        self.min_seconds = min_seconds
        self.done = 0
        self._start = time.perf_counter()
        self._shown = False

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if self.quiet:
            return
        elapsed = time.perf_counter() - self._start
        if elapsed < self.min_seconds and self.done < self.total and not self._shown:
            return
        if not self._shown and self.done >= self.total and elapsed < self.min_seconds:
            return
        self._shown = True
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(30 * frac)
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        sys.stderr.write(
            f"\r{self.label} [{bar:<30}] {self.done}/{self.total} {elapsed:5.1f}s eta {eta:5.1f}s {note[:40]:<40}"
        )
        sys.stderr.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self._shown and not self.quiet:
            # on an error, clear the bar's line so that the error report is the only line left
            sys.stderr.write("\n" if exc_type is None else "\r\033[K")
            sys.stderr.flush()
