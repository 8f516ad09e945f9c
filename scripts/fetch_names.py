"""Download the PyTorch tutorial's names data set and unpack its <Language>.txt files.

    python scripts/fetch_names.py                       # into data/names (paths.data_dir)
    python scripts/fetch_names.py dest=/some/folder url=https://... timeout=30

Then train with `python train.py experiment=names data.data_dir=data/names`.
"""

from __future__ import annotations

import sys

from rnnlab.fetch import TUTORIAL_URL, fetch_names, main

if __name__ == "__main__":
    sys.exit(
        main(
            sys.argv[1:],
            __doc__,
            fetch_names,
            TUTORIAL_URL,
            "names",
            lambda folder: f"{len(list(folder.glob('*.txt')))} languages in {folder}",
        )
    )
