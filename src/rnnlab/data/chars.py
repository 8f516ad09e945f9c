"""Character language modelling on any UTF-8 text file: contiguous chunks, next-character targets.

The text is split by position: the first ``1 - val_fraction - test_fraction`` of it trains, the
next part validates, the end tests. Each split is cut into contiguous chunks of ``seq_len``
characters; the target of each character is the one after it. The vocabulary comes from the
training part (id 0 padding, id 1 unknown) and travels inside checkpoints.

``stateful=True`` reads each split as ``batch_size`` contiguous streams instead (truncated
backprop through time, as char-rnn and PyTorch's word_language_model train): row r of batch i
is characters ``[i * seq_len, (i + 1) * seq_len)`` of stream r, so it continues row r of batch
i - 1, in the same order every epoch. Each batch carries ``offset``, the characters of each
stream before it, so the task can carry the net's state from one batch to the next. Under DDP
process k of W reads streams ``k * batch_size / W`` onwards, its own, every process the same
number of batches. The characters after the last whole batch (fewer than
``batch_size * (seq_len + 1)``) are not read.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from rnnlab.config_checks import integer, require
from rnnlab.data.base import Dims, RnnlabDataModule, TensorBatches, _identity
from rnnlab.data.resumable import ResumableLoader
from rnnlab.data.vocab import Vocabulary
from rnnlab.errors import RnnlabError


def read_text(path: str | Path) -> str:
    """The file's text; a missing, unreadable or non-UTF-8 file is an RnnlabError naming it."""
    path = Path(path)
    if not path.is_file():
        raise RnnlabError(f"text file {path} does not exist: point data.path at a text file")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise RnnlabError(f"{path} is not UTF-8 text (bad byte at offset {e.start})") from e
    except OSError as e:
        raise RnnlabError(f"{path} cannot be read ({e.strerror})") from e


def chunk(ids: torch.Tensor, seq_len: int) -> dict[str, torch.Tensor]:
    """(n,) ids -> ``x``, ``y`` of shape (chunks, seq_len), ``y`` shifted one step ahead."""
    n_chunks = (len(ids) - 1) // seq_len
    used = n_chunks * seq_len
    x = ids[:used].view(n_chunks, seq_len)
    y = ids[1 : used + 1].view(n_chunks, seq_len)
    return {"x": x, "y": y}


def streams(ids: torch.Tensor, num_streams: int, seq_len: int) -> dict[str, torch.Tensor]:
    """(n,) ids -> ``x``, ``y`` (batches * num_streams, seq_len): item ``i * num_streams + r`` is
    chunk i of stream r, the streams being ``num_streams`` contiguous runs of the text."""
    length = (len(ids) - 1) // num_streams  # characters per stream
    batches = length // seq_len
    x = ids[: num_streams * length].view(num_streams, length)
    y = ids[1 : num_streams * length + 1].view(num_streams, length)  # the next characters

    def by_batch(t: torch.Tensor) -> torch.Tensor:
        t = t[:, : batches * seq_len].reshape(num_streams, batches, seq_len)
        return t.transpose(0, 1).reshape(batches * num_streams, seq_len)

    return {"x": by_batch(x), "y": by_batch(y)}


class StreamBatches(TensorBatches):
    """``streams`` items; a batch of chunk i of several streams also holds ``offset``:
    ``i * seq_len``, the characters each of its streams has had before it (a plain int)."""

    def __init__(self, num_streams: int, **tensors: torch.Tensor) -> None:
        super().__init__(**tensors)
        self.num_streams = num_streams
        self.seq_len = tensors["x"].shape[1]

    def __getitems__(self, indices: list[int]) -> dict:
        batch = super().__getitems__(indices)
        batch["offset"] = int(indices[0]) // self.num_streams * self.seq_len
        return batch


class StreamOrder(DistributedSampler):
    """This process's streams, batch after batch, in the same order every epoch.

    Process ``rank`` of ``world_size`` reads the ``num_streams / world_size`` streams from
    ``rank * num_streams / world_size`` on. A DistributedSampler, so that Lightning leaves it in
    place under DDP. ``start`` skips that many items of the next iteration only (a resumed,
    half-done epoch).
    """

    def __init__(
        self, dataset: Dataset, num_streams: int, world_size: int = 1, rank: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=False)
        self.num_streams = num_streams
        share = num_streams // world_size
        self.streams = range(rank * share, (rank + 1) * share)
        self.start = 0

    def __iter__(self):
        batches = len(self.dataset) // self.num_streams
        order = [i * self.num_streams + r for i in range(batches) for r in self.streams]
        start, self.start = self.start, 0
        return iter(order[start:])

    def __len__(self) -> int:
        return len(self.dataset) // self.num_streams * len(self.streams)


class CharsDataModule(RnnlabDataModule):
    """Next-character prediction over a text file (see the module doc)."""

    def __init__(
        self,
        path: str,
        seq_len: int = 128,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        stateful: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        require("data.seq_len", seq_len, integer(1))
        if not isinstance(stateful, bool):
            raise ValueError(f"data.stateful must be true or false, got {stateful!r}")
        self.stateful = stateful
        if not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction!r}")
        if not isinstance(test_fraction, (int, float)) or not 0 <= test_fraction < 1:
            raise ValueError(f"data.test_fraction must be in [0, 1), got {test_fraction!r}")
        if val_fraction + test_fraction >= 1:
            raise ValueError("data.val_fraction + data.test_fraction must leave text to train on")
        self.path = str(path)
        self.seq_len = seq_len
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.vocab: Vocabulary | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        text = read_text(self.path)
        if len(text) < self.seq_len + 1:
            raise RnnlabError(
                f"{self.path} has {len(text)} characters, fewer than one chunk of "
                f"data.seq_len={self.seq_len} plus its next character"
            )
        n = len(text)
        n_val, n_test = int(n * self.val_fraction), int(n * self.test_fraction)
        bounds = {
            "train": (0, n - n_val - n_test),
            "val": (n - n_val - n_test, n - n_test),
            "test": (n - n_test, n),
        }
        if self.vocab is None:
            start, end = bounds["train"]
            self.vocab = Vocabulary.from_texts([text[start:end]])
        for split, (start, end) in bounds.items():
            if split == "test" and end == start:  # no test part asked for: test on val
                self.splits["test"] = self.splits["val"]
                continue
            hint = "" if split == "train" else f" or raise data.{split}_fraction"
            if end - start < self.seq_len + 1:
                raise RnnlabError(
                    f"the {split} part of {self.path} has {end - start} characters, fewer than "
                    f"one chunk of data.seq_len={self.seq_len} plus its next character: lower "
                    f"data.seq_len{hint}"
                )
            if self.stateful and end - start < self.batch_size * self.seq_len + 1:
                raise RnnlabError(
                    f"the {split} part of {self.path} has {end - start} characters, fewer than "
                    f"data.batch_size={self.batch_size} streams of data.seq_len={self.seq_len} "
                    f"plus one: lower data.batch_size or data.seq_len{hint}"
                )
            ids = torch.tensor(self.vocab.encode(text[start:end]), dtype=torch.long)
            if self.stateful:
                parts = streams(ids, self.batch_size, self.seq_len)
                self.splits[split] = StreamBatches(self.batch_size, **parts)
            else:
                self.splits[split] = TensorBatches(**chunk(ids, self.seq_len))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.stateful:
            return super()._loader(split, shuffle)
        if split not in self.splits:
            self.setup()
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        data = self.splits[split]
        kwargs = dict(
            batch_size=self.per_device_batch_size(),
            sampler=StreamOrder(data, self.batch_size, world, rank),
            num_workers=self.num_workers,
            collate_fn=_identity,
            persistent_workers=self.num_workers > 0,
        )
        if shuffle:  # training: resumable mid-epoch
            return ResumableLoader(data, seed=self.seed, **kwargs)
        return DataLoader(data, **kwargs)

    @property
    def dims(self) -> Dims:
        if self.vocab is None:
            self.setup()
        size = len(self.vocab)
        return Dims(task="lm", target="sequence", output_size=size, vocab_size=size)

    @property
    def baselines(self) -> dict[str, float]:
        """The unigram model's loss on the training text, in nats per character."""
        if "train" not in self.splits:
            return {}
        counts = torch.bincount(self.splits["train"].tensors["y"].flatten(), minlength=2).float()
        p = counts[counts > 0] / counts.sum()
        return {"loss": float(-(p * p.log()).sum())}

    def encode(self, text: str) -> list[int]:
        if self.vocab is None:
            self.setup()
        return self.vocab.encode(text)

    def decode(self, ids) -> str:
        return self.vocab.decode(ids.tolist() if isinstance(ids, torch.Tensor) else ids)

    def state_dict(self) -> dict:
        if self.vocab is None:
            self.setup()
        return {"vocab": list(self.vocab.symbols)}

    def load_state_dict(self, state: dict) -> None:
        vocab = Vocabulary(state["vocab"])
        if self.vocab is not None and vocab != self.vocab:
            self.splits.clear()
        self.vocab = vocab
