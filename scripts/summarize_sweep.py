"""Print a sweep's leaderboard and write it (CSV, Markdown, plots) into the sweep directory.

python scripts/summarize_sweep.py outputs/multirun/<date>/<time>
python scripts/summarize_sweep.py outputs/multirun/adding_optuna
python scripts/summarize_sweep.py DIR --storage postgresql://... --study NAME
"""

from __future__ import annotations

import argparse
import sys

from rnnlab.errors import RnnlabError
from rnnlab.sweeps import (
    aggregate,
    leaderboard,
    load_sweep,
    markdown_table,
    summary_line,
    write_summary,
)


def main(argv: list[str] | None = None) -> int:
    """Summarize one sweep directory; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="outputs/multirun/<date>/<time> or a study's directory")
    parser.add_argument("--storage", help="the study's database URL (found by itself if unset)")
    parser.add_argument("--study", help="the study's name (found by itself if unset)")
    parser.add_argument("--out", help="where to write the files (default: the sweep directory)")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep_dir, storage=args.storage, study_name=args.study)
    except RnnlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_line(sweep))
    print()
    print(markdown_table(leaderboard(sweep)))
    if "seed" in sweep.swept_keys():
        print("Mean and std over seeds:")
        print()
        print(markdown_table(aggregate(sweep)))
    for name, path in write_summary(sweep, args.out).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
