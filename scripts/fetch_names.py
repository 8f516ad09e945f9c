"""Download the PyTorch tutorial's names data set and unpack its <Language>.txt files.

    python scripts/fetch_names.py                       # into data/names (paths.data_dir)
    python scripts/fetch_names.py dest=/some/folder url=https://... timeout=30

Then train with `python train.py experiment=names data.data_dir=data/names`.
"""

from __future__ import annotations

import sys

KEYS = ("url", "dest", "timeout")


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    args = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            print(
                f"error: unknown argument {item!r}; expected key=value with key in {KEYS}",
                file=sys.stderr,
            )
            return 2
        args[key] = value
    from rnnlab.config import ROOT, RnnlabError
    from rnnlab.fetch import TUTORIAL_URL, fetch_names

    dest = args.get("dest", str(ROOT / "data" / "names"))
    try:
        folder = fetch_names(args.get("url", TUTORIAL_URL), dest, float(args.get("timeout", 30)))
    except RnnlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    count = len(list(folder.glob("*.txt")))
    print(f"{count} languages in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
