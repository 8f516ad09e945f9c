"""Draw the vanishing-gradient study of a finished sweep: final error and gradient flow against T.

    python scripts/vanishing_report.py outputs/multirun/<date>/<time> [--output docs/vanishing.png]

Writes vanishing.png and vanishing.md (the numbers) into the sweep directory, or beside --output.
`python train.py experiment=vanishing` does this by itself when its sweep ends.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("sweep_dir", help="the sweep directory (outputs/multirun/<date>/<time>)")
    parser.add_argument("--output", help="where to write the PNG (default: in the sweep directory)")
    args = parser.parse_args(argv)
    from rnnlab.errors import RnnlabError
    from rnnlab.vanishing import report

    try:
        path = report(args.sweep_dir, args.output)
    except RnnlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path.with_suffix(".md").read_text(), end="")
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
