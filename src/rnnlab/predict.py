"""Use a trained model from its checkpoint alone: classify names, or generate text.

``classify(ckpt_path, names, top_k)`` returns each name's most likely classes with their
probabilities; ``generate(ckpt_path, prompt, length, temperature)`` continues a prompt with a
character language model. The vocabulary, class names and model config come from the checkpoint.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from rnnlab.data.vocab import UNK_ID
from rnnlab.errors import RnnlabError
from rnnlab.evaluate import restore
from rnnlab.tasks.lm import generate_text

UNKNOWN = "unknown: no character of this name was seen in training"


@dataclass
class Prediction:
    """A name and its ``top_k`` (class, probability) pairs, most likely first.

    ``unknown`` is true (and ``classes`` empty) for a name made only of characters the model never
    saw in training (emoji, another script): any class it gave would be a guess.
    """

    name: str
    classes: list[tuple[str, float]]
    unknown: bool = False

    def line(self) -> str:
        """``name<TAB>class<TAB>probability`` (then the next classes, for top_k > 1), or
        ``name<TAB>unknown: ...`` for a name of unseen characters only."""
        if self.unknown:
            return f"{self.name}\t{UNKNOWN}"
        return "\t".join([self.name, *(f"{c}\t{p:.4f}" for c, p in self.classes)])


def load(ckpt_path: str | Path):
    """The config, datamodule and task (eval mode, CPU) stored in a checkpoint."""
    return restore(ckpt_path)


@torch.no_grad()
def classify(
    ckpt_path: str | Path | tuple, names: list[str], top_k: int = 1, batch_size: int = 512
) -> list[Prediction]:
    """The ``top_k`` most likely classes of each name; ``ckpt_path`` may be a ``load()`` result."""
    cfg, datamodule, task = load(ckpt_path) if not isinstance(ckpt_path, tuple) else ckpt_path
    class_names = list(datamodule.dims.class_names or [])
    if (
        not class_names
        or not hasattr(datamodule, "encode")
        or datamodule.dims.task != "classification"
    ):
        raise RnnlabError("this checkpoint is not a classifier of named classes (e.g. data=names)")
    if not isinstance(top_k, int) or not 1 <= top_k <= len(class_names):
        raise RnnlabError(f"top_k must be in 1..{len(class_names)}, got {top_k!r}")
    names = [n for n in (n.strip() for n in names) if n]
    if not names:
        raise RnnlabError("no names to classify: give input=FILE, input=- or names=[...]")
    out: list[Prediction] = []
    for start in range(0, len(names), batch_size):
        chunk = names[start : start + batch_size]
        batch = datamodule.encode(chunk)
        probs = torch.softmax(task(batch["x"], batch["lengths"]).float(), dim=-1)  # (n, classes)
        top = probs.topk(top_k, dim=-1)
        valid = torch.arange(batch["x"].shape[1])[None, :] < batch["lengths"][:, None]
        unseen = ((batch["x"] == UNK_ID) | ~valid).all(dim=1)  # no character known
        for i, name in enumerate(chunk):
            if unseen[i]:
                out.append(Prediction(name, [], unknown=True))
                continue
            pairs = [
                (class_names[int(c)], float(p))
                for p, c in zip(top.values[i], top.indices[i], strict=True)
            ]
            out.append(Prediction(name, pairs))
    return out


def generate(
    ckpt_path: str | Path | tuple,
    prompt: str = "\n",
    length: int = 300,
    temperature: float = 0.8,
    seed: int | None = 0,
) -> str:
    """Continue ``prompt`` with the language model stored in a checkpoint."""
    cfg, datamodule, task = load(ckpt_path) if not isinstance(ckpt_path, tuple) else ckpt_path
    if datamodule.dims.task != "lm":
        raise RnnlabError("this checkpoint is not a language model (e.g. data=chars)")
    return generate_text(task.net, datamodule.vocab, prompt, length, temperature, seed)


def read_names(input: str | None = None, names: str | list[str] | None = None) -> list[str]:
    """Names from ``names`` (a list, or ``[A,B]`` text) and from ``input`` (a file, ``-`` stdin)."""
    out: list[str] = []
    if isinstance(names, str):
        text = names.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        names = text.split(",")
    out += [n.strip() for n in names or [] if n.strip()]
    if input == "-":
        out += [n.strip() for n in sys.stdin.read().splitlines() if n.strip()]
    elif input is not None:
        try:
            text = Path(input).read_bytes().decode("utf-8")
        except FileNotFoundError as e:
            raise RnnlabError(f"input file {input} does not exist") from e
        except UnicodeDecodeError as e:
            raise RnnlabError(f"input file {input} is not UTF-8 text") from e
        out += [n.strip() for n in text.splitlines() if n.strip()]
    return out
