"""Run every proof: ``python -m proofs [NAME ...]``; exit status 1 if any fails.

Prints one line per result: name, statement, ``verified`` or ``FAILED`` (with the reason). With no
name every proof runs; an unknown name is one line on stderr and exit status 2; ``--list`` prints the
names; ``--traceback`` adds the traceback of a failed proof on stderr; ``--help`` / ``-h`` print this.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from proofs import proof_modules


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(
        prog="python -m proofs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="proofs to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the proof names and exit")
    parser.add_argument("--traceback", action="store_true", help="print the traceback of a failed proof")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    modules = proof_modules()
    known = {m.__name__.split(".")[-1]: m for m in modules}
    if args.list:
        print("\n".join(known))
        return 0
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        sys.stderr.write(f"proofs: error: no proof named {', '.join(map(repr, unknown))} (see --list)\n")
        return 2
    mods = [m for name, m in known.items() if not args.names or name in args.names]
    failed = 0
    for mod in mods:
        name = mod.__name__.split(".")[-1]
        t0 = time.perf_counter()
        try:
            mod.verify()
            status = "verified"
        except Exception as exc:  # a proof failing is a finding, not a crash
            failed += 1
            status = f"FAILED ({type(exc).__name__}: {' '.join(str(exc).split())})"
            if args.traceback:
                traceback.print_exc(file=sys.stderr)
        dt = time.perf_counter() - t0
        print(f"{name:<34} {mod.STATEMENT}  ... {status} [{dt:.1f}s]", flush=True)
    print(f"{len(mods) - failed} verified, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
