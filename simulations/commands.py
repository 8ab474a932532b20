"""Every command line of dpbasin in one registry: what a user types, which ``main`` runs it, its config.

The network commands are read from the dispatcher's ``COMMANDS`` (``simulations/nn/__main__.py``), so
a command added there is registered here too; the synthetic CLIs, ``gpu_validate``, ``study``,
``paper``, ``paper.nn_figures``, ``paper.claims_doc``, ``paper.readme`` and ``proofs`` are listed
below, and a test finds every module with a ``__main__`` block and checks that it is here. Used by
the command-line fuzz (``tests/test_fuzz_cli.py``), which generates each command's flags from its
config dataclass.

What each command does without arguments (``no_arguments``): ``"runs"`` — it runs at its defaults
and writes its result folder (``python -m paper`` and ``python -m simulations.study`` regenerate the
whole study, minutes; ``python -m proofs`` verifies every proof); ``"usage"`` — a required argument
is the honest design, so it prints one usage line and exits with status 2 (``python -m
simulations.nn`` needs a command, ``paper.nn_figures`` result folders to draw, ``paper.claims_doc``
its ``--json`` and ``--markdown`` files, ``paper.readme`` an action and its files).

Example:
    >>> names = [c.prog for c in commands()]
    >>> "python -m simulations.basin_dim" in names and "python -m simulations.nn train" in names
    True
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass

__all__ = ["Command", "commands", "config_class"]


@dataclass(frozen=True)
class Command:
    """One command line: ``prog`` as typed, ``module`` whose ``main(argv)`` runs it (after ``prefix``),
    ``config_module`` holding its frozen ``*Config`` dataclass (None: a hand-written parser)."""

    prog: str
    module: str
    prefix: tuple[str, ...] = ()
    config_module: str | None = None
    no_arguments: str = "runs"


SYNTHETIC = ("basin_dim", "recovery", "switch", "prune")


def commands() -> list[Command]:
    """All command lines (module docstring), the dispatcher's network commands included."""
    from simulations.nn.__main__ import COMMANDS, PROG

    out = [
        Command(f"python -m simulations.{n}", f"simulations.{n}", config_module=f"simulations.{n}") for n in SYNTHETIC
    ]
    out.append(Command(PROG, "simulations.nn.__main__", no_arguments="usage"))
    out += [
        Command(f"{PROG} {name}", "simulations.nn.__main__", (name,), module) for name, (module, _) in COMMANDS.items()
    ]
    out += [
        Command("python -m simulations.gpu_validate", "simulations.gpu_validate"),
        Command("python -m simulations.study", "simulations.study"),
        Command("python -m paper", "paper.__main__"),
        Command("python -m paper.nn_figures", "paper.nn_figures", no_arguments="usage"),
        Command("python -m paper.claims_doc", "paper.claims_doc", no_arguments="usage"),
        Command("python -m paper.basin_doc", "paper.basin_doc", no_arguments="usage"),
        Command("python -m paper.readme", "paper.readme", no_arguments="usage"),
        Command("python -m proofs", "proofs.__main__"),
    ]
    return out


def config_class(module_name: str) -> type:
    """The one frozen dataclass named ``*Config`` defined in ``module_name`` (a command's config)."""
    module = importlib.import_module(module_name)
    found = [
        obj
        for name, obj in vars(module).items()
        if isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and name.endswith("Config")
        and obj.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise LookupError(
            f"{module_name} must define exactly one *Config dataclass, found {[c.__name__ for c in found]}"
        )
    return found[0]
