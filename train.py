"""Train one run, or a sweep with -m: `python train.py [overrides]`. See README.md."""

from rnnlab.cli import main

if __name__ == "__main__":
    main()
