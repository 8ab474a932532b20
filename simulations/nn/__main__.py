"""``python -m simulations.nn <command> [options]`` — DP-SGD experiments on real networks.

Commands:
  train      one training run (simulations.nn.train)
  switch     claim 1: switch between SGD and DP-SGD at epoch s, both directions
  ablate     claim 2: sgd / clip / noise / dpsgd paired, and recovery from a noise burst
  width      claim 3: MLP width sweep (parameter count over two decades) at fixed eps and sigma
  prune      claim 4: magnitude-pruning sparsity sweep at fixed eps, per mask source
  epsilon    epsilon-accuracy curves (dense and public-mask-pruned DP-SGD, eps 1..8 and inf)
  basin      theory (dptheory.spectral) vs DP-SGD arms warm-started at a converged minimum

``python -m simulations.nn <command> --help`` lists a command's options. Without a command the
dispatcher prints one usage line and exits with status 2 (a command is required); ``--help`` / ``-h``
list the commands. Every command is built on ``simulations.common.cli.run_main``: bad input is one
line on stderr and exit status 2, and each takes ``--max-memory`` / ``--max-work``.

Example:
    python -m simulations.nn ablate --epochs 4 --seeds 0,1 --out results/nn/ablate-small
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "train": ("simulations.nn.train", "one training run"),
    "switch": ("simulations.net_switch", "claim 1: switch epoch sweep, SGD <-> DP-SGD"),
    "ablate": ("simulations.net_ablate", "claim 2: four-mode ablation and noise-burst recovery"),
    "width": ("simulations.net_width", "claim 3: MLP width sweep at fixed eps and sigma"),
    "prune": ("simulations.net_prune", "claim 4: sparsity sweep per mask source"),
    "epsilon": ("simulations.net_epsilon", "epsilon-accuracy curves, dense and pruned DP-SGD"),
    "basin": ("simulations.net_basin", "theory vs networks: warm-started arms at a minimum"),
}
PROG = "python -m simulations.nn"
NN_EXTRAS = ("torch", "opacus", "mnist1d", "sklearn", "mlxtend")  # the [nn] extra of pyproject.toml


def usage() -> str:
    lines = [f"usage: {PROG} <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", f"'{PROG} <command> --help' lists a command's options."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to ``<command>``'s ``main``; an unknown command is one line on stderr and exit 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write(f"{PROG}: error: a command is required (choose from {', '.join(COMMANDS)}; see --help)\n")
        return 2
    if args[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        sys.stderr.write(f"{PROG}: error: unknown command {command!r} (choose from {', '.join(COMMANDS)})\n")
        return 2
    try:
        module = importlib.import_module(COMMANDS[command][0])
    except ModuleNotFoundError as exc:  # the network extras are optional: say how to get them
        if exc.name not in NN_EXTRAS:
            raise
        sys.stderr.write(
            f"{PROG}: error: the network experiments need the 'nn' extra ({exc.name} is not installed): "
            "pip install -e '.[nn]'\n"
        )
        return 2
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
