"""Score a checkpoint with the config stored inside it.

    python scripts/eval.py ckpt_path=outputs/<date>/<time>/checkpoints/best.ckpt [key=value ...]

Extra ``key=value`` overrides change the stored config (e.g. ``data.data_dir=other/names``);
``output=FILE`` also writes the metrics as JSON.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    args = dict(
        a.split("=", 1) for a in argv if a.startswith(("ckpt_path=", "output=", "accelerator="))
    )
    overrides = [a for a in argv if not a.startswith(("ckpt_path=", "output=", "accelerator="))]
    if "ckpt_path" not in args or any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    from rnnlab.errors import RnnlabError
    from rnnlab.evaluate import evaluate, write_json

    try:
        metrics = evaluate(
            args["ckpt_path"], overrides, accelerator=args.get("accelerator", "auto")
        )
    except RnnlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key, value in metrics.items():
        print(f"{key}\t{value:.6f}")
    if "output" in args:
        write_json(args["output"], {"ckpt_path": args["ckpt_path"], "metrics": metrics})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
