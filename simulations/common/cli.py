"""Command lines generated from one frozen config dataclass: the config is the single source of the flags, their defaults and their help.

Every experiment is ``@dataclass(frozen=True) class XConfig`` whose fields carry their help text in
``field(metadata={"help": ...})``. :func:`build_parser` turns it into an ``argparse`` parser
(defaults shown, integers accept ``1e6``, tuples as comma lists, unknown flags are errors), and
:func:`run_main` runs it so that **bad input gives exactly one line on stderr and exit status 2**
— never a traceback, never a half-written result folder.

Example (the whole of a CLI module's ``main``)::

    def main(argv=None) -> int:
        return run_main(MyConfig, run, argv, description=__doc__)
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import math
import sys
import time
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

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
    return str


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
    config_cls: type, *, prog: str | None = None, description: str | None = None
) -> argparse.ArgumentParser:
    """An argparse parser with one ``--flag`` per field of the frozen dataclass ``config_cls``."""
    parser = _OneLineParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        helptext = f.metadata.get("help", "")
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
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
    config_cls: type[C], argv: Sequence[str] | None, *, prog: str | None = None, description: str | None = None
) -> C:
    """Parse ``argv`` into ``config_cls``; the dataclass's own ``__post_init__`` validates values."""
    parser = build_parser(config_cls, prog=prog, description=description)
    ns = parser.parse_args(argv)
    return config_cls(**vars(ns))


def run_main(
    config_cls: type[C],
    run: Callable[[C], Any],
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
    figure: Callable[[C], Any] | None = None,
) -> int:
    """Parse, validate and run; bad input → one line on stderr and return 2 (no traceback).

    ``run(config)`` does the work and writes results; it should call
    :func:`simulations.common.results.check_output_dir` *before* any long computation so an
    unwritable path fails fast. ``figure(config)``, if given, draws the figure from the result
    folder **after** ``run`` has returned (the results are durable by then): a figure that fails
    prints one warning naming the result folder and the command still succeeds (exit 0), so a
    plotting problem never destroys or hides a finished run.
    """
    prog = prog or Path(sys.argv[0]).name
    try:
        config = parse_config(config_cls, argv, prog=prog, description=description)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, already printed)
        return int(exc.code or 0)
    except (ValueError, TypeError) as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    try:
        run(config)
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    if figure is not None:
        try:
            figure(config)
        except Exception as exc:  # a figure must never turn a finished run into a failure
            where = getattr(config, "out", None)
            sys.stderr.write(
                f"{prog}: warning: figure not drawn ({type(exc).__name__}: {exc}); results are in {where}\n"
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

    def __exit__(self, *exc: Any) -> None:
        if self._shown and not self.quiet:
            sys.stderr.write("\n")
            sys.stderr.flush()
