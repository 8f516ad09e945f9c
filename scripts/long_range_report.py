"""Write the long-range study's table and plot for a finished (or partly finished) sweep.

    python scripts/long_range_report.py outputs/multirun/<date>/<time> [more sweeps] [--output PNG]

Writes long_range.png and long_range.md (training steps to solve per variant, task and T) into the
first sweep directory, or beside --output. Further sweep directories add their runs (a part of the
study run in another process). `python train.py experiment=long_range` does this by itself when
its sweep ends.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("sweep_dir", help="the sweep directory (outputs/multirun/<date>/<time>)")
    parser.add_argument("more", nargs="*", help="further sweep directories whose runs join in")
    parser.add_argument("--output", help="where to write the PNG (default: in the sweep directory)")
    args = parser.parse_args(argv)
    from rnnlab.errors import RnnlabError
    from rnnlab.long_range import report

    try:
        path = report(args.sweep_dir, args.output, tuple(args.more))
    except RnnlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path.with_suffix(".md").read_text(), end="")
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
