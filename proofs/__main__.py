"""Run every proof: ``python -m proofs [NAME ...]``; exit status 1 if any fails.

Prints one line per result: name, statement, ``verified`` or ``FAILED`` (with the reason).
"""

from __future__ import annotations

import sys
import time
import traceback

from proofs import proof_modules


def main(argv: list[str] | None = None) -> int:
    names = set(sys.argv[1:] if argv is None else argv)
    mods = [m for m in proof_modules() if not names or m.__name__.split(".")[-1] in names]
    if names and not mods:
        sys.stderr.write(f"proofs: error: no proof named {', '.join(sorted(names))}\n")
        return 2
    failed = 0
    for mod in mods:
        name = mod.__name__.split(".")[-1]
        t0 = time.perf_counter()
        try:
            mod.verify()
            status = "verified"
        except Exception as exc:  # a proof failing is a finding, not a crash
            failed += 1
            status = f"FAILED ({type(exc).__name__}: {exc})"
            traceback.print_exc(file=sys.stderr)
        dt = time.perf_counter() - t0
        print(f"{name:<34} {mod.STATEMENT}  ... {status} [{dt:.1f}s]", flush=True)
    print(f"{len(mods) - failed} verified, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
