"""Print each source notebook's numbers next to the same numbers computed with rnnlab.

    python scripts/seeds.py            # every notebook; exit 0 when every row agrees
    python scripts/seeds.py 002 004    # only these notebooks

A row agrees when rnnlab's value, written to the digits the notebook prints, is the same text,
or, for identities rnnlab adds (cell stacks against fused layers), when they differ by <= 1e-6.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    from notebooks.printed import SEEDS, render

    unknown = [a for a in argv if a not in SEEDS]
    if unknown:
        print(
            f"error: unknown notebook {unknown[0]!r}; choose from {', '.join(SEEDS)}",
            file=sys.stderr,
        )
        return 2
    failed = []
    for key in argv or list(SEEDS):
        check = SEEDS[key]()
        print(render(check), end="\n\n")
        failed += [f"{check.name}: {r.quantity}" for r in check.rows if not r.agrees]
    if failed:
        print(f"{len(failed)} row(s) differ:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    print("Every row agrees.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
