"""Names by language: a folder of ``<Language>.txt`` files (one name per line, UTF-8).

Reading policy, the same for every folder:

- Lines are stripped; blank lines are skipped. Accents are kept (NFC) or folded to their base
  letters (``accents: fold``, e.g. ``Béringer -> Beringer``).
- A name listed twice under one language counts as often as the file lists it
  (``duplicates: keep``, the files' own frequencies: the tutorial's Arabic.txt lists 108 names
  2000 times), or once (``duplicates: merge``).
- A name listed under several languages (``Abel`` is English, French and German) is kept once
  per language with ``ambiguous: keep`` (a model can then be right for only one of them), or
  dropped everywhere with ``ambiguous: drop``.
- The split is stratified by language and seeded: each language's records are shuffled and cut
  into train/val/test, ``test_fraction`` and ``val_fraction`` of them each a share of the whole
  (0.15 and 0.1: the test split is 15% of every language, validation comes out of the other
  85%). ``split: lines`` cuts line by line, as the field reports names results: every line of
  every file is one record (with the defaults), so a repeated name or a name under several
  languages can be in training and in the test split. ``split: names`` cuts by unique name:
  every copy of a name lands in the same split, so no test name was seen in training.
- The vocabulary comes from the training split; id 0 is padding, id 1 the unknown symbol.

The vocabulary, the language names and the class weights are part of the datamodule's state, so
they travel inside every checkpoint and predict/eval need nothing else.
"""

from __future__ import annotations

import logging
import math
import random
import unicodedata
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from rnnlab.data.base import Dims, RnnlabDataModule, TensorBatches, _identity
from rnnlab.data.resumable import ResumableLoader
from rnnlab.data.vocab import Vocabulary
from rnnlab.errors import RnnlabError

log = logging.getLogger("rnnlab")

ACCENTS = ("keep", "fold")
AMBIGUOUS = ("keep", "drop")
DUPLICATES = ("merge", "keep")
SPLITS = ("lines", "names")
BALANCE = ("none", "weights", "sampler")


def normalize(name: str, accents: str = "keep") -> str:
    """NFC-normalize a name, or fold its accents to base letters (``Émile -> Emile``)."""
    if accents == "fold":
        decomposed = unicodedata.normalize("NFD", name)
        return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    return unicodedata.normalize("NFC", name)


def read_names_folder(
    data_dir: str | Path, accents: str = "keep", duplicates: str = "merge"
) -> dict[str, list[str]]:
    """``{language: [names in file order]}`` from a folder of ``<Language>.txt`` files.

    ``duplicates="merge"`` lists each name once per language, ``"keep"`` as often as the file does.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise RnnlabError(
            f"names folder {folder} does not exist: point data.data_dir at a folder of "
            "<Language>.txt files, or download the tutorial's with scripts/fetch_names.py"
        )
    files = sorted(p for p in folder.glob("*.txt") if p.is_file())
    if not files:
        raise RnnlabError(f"names folder {folder} holds no <Language>.txt files")
    languages: dict[str, list[str]] = {}
    for path in files:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise RnnlabError(f"{path} is not UTF-8 text (bad byte at offset {e.start})") from e
        except OSError as e:
            raise RnnlabError(f"{path} cannot be read ({e.strerror})") from e
        names = [normalize(line.strip(), accents) for line in text.splitlines()]
        names = [name for name in names if name]
        if not names:
            raise RnnlabError(f"{path} holds no names (only blank lines)")
        languages[path.stem] = names if duplicates == "keep" else list(dict.fromkeys(names))
    return languages


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Train/val/test sizes for ``n`` items; train keeps at least one item when it can."""
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    while n_val + n_test >= n and n_val + n_test > 0:
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    return n - n_val - n_test, n_val, n_test


class LengthBuckets(Sampler[list[int]]):
    """Training batches of similar lengths, so little padding is run through the net.

    Each epoch draws an order (a shuffle, or class-balanced draws with replacement when
    ``weights`` are given), sorts each pool of ``pool_batches`` batches by length, cuts it into
    batches and shuffles the batches. ``bucket=False`` keeps the drawn order.

    The order depends on ``(seed, epoch)`` alone: Lightning sets the epoch before each epoch
    (through ``sampler``, where it looks for a batch sampler's ``set_epoch``), and ``start``
    skips that many batches of the next iteration only (a resumed, half-done epoch).
    """

    def __init__(
        self,
        lengths: torch.Tensor,
        batch_size: int,
        seed: int,
        weights: torch.Tensor | None = None,
        bucket: bool = True,
        pool_batches: int = 50,
    ) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.weights = weights
        self.bucket = bucket
        self.pool_batches = pool_batches
        self.epoch = 0
        self.start = 0

    @property
    def sampler(self) -> LengthBuckets:
        """Itself: Lightning calls ``set_epoch`` on a batch sampler's ``sampler``."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        start, self.start = self.start, 0
        for i, batch in enumerate(self._batches()):
            if i >= start:
                yield batch.tolist()

    def _batches(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.lengths)
        if self.weights is None:
            order = torch.randperm(n, generator=g)
        else:
            order = torch.multinomial(self.weights, n, replacement=True, generator=g)
        if not self.bucket:
            return list(order.split(self.batch_size))
        batches: list[torch.Tensor] = []
        for pool in order.split(self.batch_size * self.pool_batches):
            pool = pool[torch.argsort(self.lengths[pool], stable=True)]
            batches.extend(pool.split(self.batch_size))
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


class NamesDataModule(RnnlabDataModule):
    """Classify names by language from a folder of ``<Language>.txt`` files (see the module doc)."""

    def __init__(
        self,
        data_dir: str,
        accents: str = "keep",
        ambiguous: str = "keep",
        duplicates: str = "keep",
        split: str = "lines",
        val_fraction: float = 0.1,
        test_fraction: float = 0.15,
        balance: str = "none",
        balance_power: float = 1.0,
        bucket: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        for key, value, allowed in (
            ("accents", accents, ACCENTS),
            ("ambiguous", ambiguous, AMBIGUOUS),
            ("duplicates", duplicates, DUPLICATES),
            ("split", split, SPLITS),
            ("balance", balance, BALANCE),
        ):
            if value not in allowed:
                raise ValueError(f"data.{key} must be one of {list(allowed)}, got {value!r}")
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"data.{key} must be in (0, 1), got {value!r}")
        if val_fraction + test_fraction >= 1:
            raise ValueError(
                f"data.val_fraction + data.test_fraction must leave names to train on, got "
                f"{val_fraction} + {test_fraction}"
            )
        self.data_dir = str(data_dir)
        self.accents, self.ambiguous, self.balance = accents, ambiguous, balance
        if (
            isinstance(balance_power, bool)
            or not isinstance(balance_power, (int, float))
            or not 0 < balance_power <= 1
        ):
            raise ValueError(f"data.balance_power must be in (0, 1], got {balance_power!r}")
        self.balance_power = float(balance_power)
        self.duplicates, self.split = duplicates, split
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.bucket = bool(bucket)
        self.vocab: Vocabulary | None = None
        self.class_names: list[str] | None = None
        self.class_weights: list[float] | None = None
        self.trained_on: str | None = None  # the folder a restored vocabulary was built from
        self.texts: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ reading and splitting

    def _records(self) -> list[tuple[str, int]]:
        """Every (name, class) pair of the folder under the reading policy."""
        languages = read_names_folder(self.data_dir, self.accents, self.duplicates)
        if self.class_names is None:
            self.class_names = sorted(languages)
        unknown = sorted(set(languages) - set(self.class_names))
        if unknown:
            raise RnnlabError(
                f"{Path(self.data_dir) / (unknown[0] + '.txt')} is a language the model does not "
                f"know; it knows {', '.join(self.class_names)}"
            )
        index = {language: i for i, language in enumerate(self.class_names)}
        owners: dict[str, list[int]] = {}
        for language in sorted(languages):
            for name in languages[language]:
                owners.setdefault(name, []).append(index[language])
        if self.ambiguous == "drop":
            owners = {name: c for name, c in owners.items() if len(set(c)) == 1}
        return [(name, c) for name, classes in owners.items() for c in classes]

    def split_indices(self, records: list[tuple[str, int]]) -> dict[str, list[int]]:
        """Which of ``records`` each split holds: stratified by language, seeded.

        ``split="lines"`` cuts record by record; ``split="names"`` keeps all of a name's records
        together (stratified by the first of its languages).
        """
        groups: dict[object, list[int]] = {}  # a group lands in one split as a whole
        for i, (name, _) in enumerate(records):
            groups.setdefault(name if self.split == "names" else i, []).append(i)
        strata: dict[int, list[list[int]]] = {}
        for rows in groups.values():
            strata.setdefault(min(records[i][1] for i in rows), []).append(rows)
        g = torch.Generator().manual_seed(int(self.seed))
        splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        for c in sorted(strata):
            members = strata[c]
            order = torch.randperm(len(members), generator=g).tolist()
            n_train, n_val, _ = split_counts(len(members), self.val_fraction, self.test_fraction)
            for rank, i in enumerate(order):
                split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
                splits[split].extend(members[i])
        return splits

    def _split(self, records: list[tuple[str, int]]) -> dict[str, list[tuple[str, int]]]:
        rows = self.split_indices(records)
        return {split: [records[i] for i in rows[split]] for split in rows}

    def _prepare(self) -> dict[str, list[tuple[str, int]]]:
        records = self._records()
        if self.trained_on is not None and self._resolved() != self.trained_on:
            # a restored model scored on another folder: the whole folder is the test set
            log.info(
                "Scoring every name of %s (not the folder the model trained on)", self.data_dir
            )
            return {"train": records, "val": records, "test": records}
        splits = self._split(records)
        if self.vocab is None:
            self.vocab = Vocabulary.from_texts(name for name, _ in splits["train"])
        if self.class_weights is None and self.balance == "weights":
            counts = torch.bincount(
                torch.tensor([c for _, c in splits["train"]]), minlength=len(self.class_names)
            ).float()
            # total / (classes * count), tempered by balance_power (1: every language weighs alike)
            weights = torch.where(
                counts > 0, (counts.sum() / (len(counts) * counts)) ** self.balance_power, 0.0
            )
            self.class_weights = [round(float(w), 6) for w in weights]
        return splits

    def _resolved(self) -> str:
        return str(Path(self.data_dir).expanduser().resolve())

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for split, records in self._prepare().items():
            if not records:
                raise RnnlabError(
                    f"the {split} split of {self.data_dir} is empty: the folder has too few names"
                )
            if split != "train":  # evaluation order: by length, so batches carry little padding
                records = sorted(records, key=lambda r: len(r[0]))
            self.texts[split] = [name for name, _ in records]
            x, lengths = self.vocab.encode_batch(self.texts[split])  # (n, longest), (n,)
            y = torch.tensor([c for _, c in records], dtype=torch.long)
            self.splits[split] = TensorBatches(x=x, y=y, lengths=lengths)

    # ------------------------------------------------------------------ what the model needs

    @property
    def dims(self) -> Dims:
        if self.vocab is None or self.class_names is None:
            self.setup()
        return Dims(
            task="classification",
            target="last",
            output_size=len(self.class_names),
            vocab_size=len(self.vocab),
            class_names=tuple(self.class_names),
            class_weights=tuple(self.class_weights) if self.class_weights else None,
        )

    @property
    def baselines(self) -> dict[str, float]:
        """Always guessing the most common training language, scored on each split.

        Its accuracy is that language's share of the split; its balanced accuracy is 1 / the
        languages present, and its macro F1 is that language's F1 over the languages present.
        """
        if "train" not in self.splits:
            return {}
        train_y = self.splits["train"].tensors["y"]
        majority = int(torch.bincount(train_y).argmax())
        out: dict[str, float] = {}
        for split in ("val", "test"):
            if split not in self.splits:
                continue
            y = self.splits[split].tensors["y"]
            share = float((y == majority).float().mean())
            present = len(torch.unique(y))
            out[f"{split}/acc"] = share
            out[f"{split}/balanced_acc"] = 1.0 / present
            out[f"{split}/f1_macro"] = 2 * share / (1 + share) / present
        return out

    def encode(self, names: list[str]) -> dict[str, torch.Tensor]:
        """A batch of raw names, normalized as in training: ``x`` (n, longest) and ``lengths``."""
        if self.vocab is None:
            self.setup()
        texts = [normalize(n.strip(), self.accents) for n in names]
        empty = [n for n, t in zip(names, texts, strict=True) if not t]
        if empty:
            raise RnnlabError(f"cannot classify an empty name ({empty[0]!r})")
        x, lengths = self.vocab.encode_batch(texts)
        return {"x": x, "lengths": lengths}

    def decode(self, ids: torch.Tensor) -> str:
        return self.vocab.decode(ids.tolist())

    def train_dataloader(self) -> DataLoader:
        self.setup()
        world = self.trainer.world_size if self.trainer is not None else 1
        if world > 1:  # Lightning shards the default loader across processes
            return super().train_dataloader()
        train = self.splits["train"]
        weights = None
        if self.balance == "sampler":
            y = train.tensors["y"]
            counts = torch.bincount(y, minlength=len(self.class_names)).float()
            # balance_power 1: every language drawn equally often; below 1, between that and
            # the languages' own shares
            weights = counts[y] ** -self.balance_power
        sampler = LengthBuckets(
            train.tensors["lengths"], self.batch_size, self.seed, weights, bucket=self.bucket
        )
        return ResumableLoader(  # the epoch and the batches served travel in every checkpoint
            train,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=_identity,
            persistent_workers=self.num_workers > 0,
        )

    # ------------------------------------------------------------------ checkpoint state

    def state_dict(self) -> dict:
        if self.vocab is None:
            self.setup()
        return {
            "vocab": list(self.vocab.symbols),
            "class_names": list(self.class_names),
            "class_weights": self.class_weights,
            "accents": self.accents,
            "split": self.split,
            "data_dir": self.trained_on or self._resolved(),
        }

    def load_state_dict(self, state: dict) -> None:
        vocab = Vocabulary(state["vocab"])
        if self.vocab is not None and vocab != self.vocab:
            self.splits.clear()
        self.vocab = vocab
        self.class_names = list(state["class_names"])
        self.class_weights = state.get("class_weights")
        self.accents = state.get("accents", self.accents)
        # the run's own test split: checkpoints from before `split` existed were cut by name
        self.split = state.get("split", "names")
        self.trained_on = state.get("data_dir")


def write_toy_names(folder: str | Path, per_language: int = 150, seed: int = 0) -> Path:
    """A folder of two made-up languages that a small model tells apart from their letters.

    ``Kalomir.txt`` names are built from ``ka lo mi ra ve`` syllables and end in ``-ski`` or
    ``-ova``; ``Tundish.txt`` names from ``to un dr sh ew`` and end in ``-son`` or ``-ley``.
    """
    rng = random.Random(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    languages = {
        "Kalomir": (["ka", "lo", "mi", "ra", "ve", "na"], ["ski", "ova", "ich"]),
        "Tundish": (["to", "un", "dr", "sh", "ew", "ba"], ["son", "ley", "ton"]),
    }
    for language, (syllables, endings) in languages.items():
        names: set[str] = set()
        while len(names) < per_language:
            body = "".join(rng.choice(syllables) for _ in range(rng.randint(1, 3)))
            names.add((body + rng.choice(endings)).capitalize())
        (folder / f"{language}.txt").write_text("\n".join(sorted(names)) + "\n", encoding="utf-8")
    return folder
