"""Use a trained checkpoint: classify names, or generate text with a language model.

    python scripts/predict.py ckpt_path=PATH input=names.txt      # one name per line
    echo Dovesky | python scripts/predict.py ckpt_path=PATH input=-
    python scripts/predict.py ckpt_path=PATH names=[Dovesky,Satoshi] top_k=3
    python scripts/predict.py ckpt_path=PATH prompt="ROMEO:" length=300 temperature=0.8

A classifier prints one line per name: name, language, probability (tab-separated; ``top_k``
adds the next languages). A name made only of characters never seen in training prints
``name<TAB>unknown: ...`` instead. A language model prints the prompt and its continuation.
"""

from __future__ import annotations

import sys

KEYS = ("ckpt_path", "input", "names", "top_k", "prompt", "length", "temperature", "seed")


def parse(argv: list[str]) -> dict[str, str]:
    args = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise ValueError(f"unknown argument {item!r}; expected key=value with key in {KEYS}")
        args[key] = value
    return args


def numbers(args: dict[str, str]) -> dict[str, int | float]:
    """The numeric arguments, each checked by its rule before torch is imported."""
    from rnnlab.config_checks import integer, number

    rules = {
        "top_k": (int, integer(1)),
        "length": (int, integer(0)),
        "temperature": (float, number(0, must_be="a non-negative number (0: the likeliest)")),
        "seed": (int, integer(0, 2**32 - 1)),
    }
    out: dict[str, int | float] = {}
    for key, (kind, rule) in rules.items():
        if key not in args:
            continue
        try:
            value: object = kind(args[key])
        except ValueError:
            value = args[key]
        rule.check(key, value)
        out[key] = value  # type: ignore[assignment]
    return out


def main(argv: list[str]) -> int:
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        args = parse(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "ckpt_path" not in args:
        print("error: ckpt_path=PATH is required", file=sys.stderr)
        return 2
    from rnnlab.errors import RnnlabError

    try:
        values = numbers(args)
    except RnnlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from rnnlab.predict import classify, generate, load, read_names

    try:
        restored = load(args["ckpt_path"])
        if restored[1].dims.task == "lm":
            text = generate(
                restored,
                prompt=args.get("prompt", "\n"),
                length=int(values.get("length", 300)),
                temperature=float(values.get("temperature", 0.8)),
                seed=int(values["seed"]) if "seed" in values else None,
            )
            print(args.get("prompt", "\n") + text)
            return 0
        names = read_names(args.get("input"), args.get("names"))
        for prediction in classify(restored, names, top_k=int(values.get("top_k", 1))):
            print(prediction.line())
    except RnnlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # a number that is not one
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
