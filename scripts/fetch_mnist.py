"""Download MNIST's four IDX files (gzipped, 11 MB) for data=mnist and experiment=smnist/pmnist.

    python scripts/fetch_mnist.py                       # into data/mnist (paths.data_dir)
    python scripts/fetch_mnist.py dest=/some/folder url=https://.../mnist/ timeout=30

Then train with `python train.py experiment=smnist` (or pmnist). Fashion-MNIST and KMNIST come in
the same format: point data.data_dir at their folder.
"""

from __future__ import annotations

import sys

from rnnlab.fetch import MNIST_FILES, MNIST_URL, fetch_mnist, main

if __name__ == "__main__":
    sys.exit(
        main(
            sys.argv[1:],
            __doc__,
            fetch_mnist,
            MNIST_URL,
            "mnist",
            lambda folder: f"{len(MNIST_FILES)} MNIST files in {folder}",
        )
    )
