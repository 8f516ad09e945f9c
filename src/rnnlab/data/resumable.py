"""A training loader whose order depends only on (seed, epoch) and that resumes part-way through."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    """One 63-bit seed per (seed, epoch) pair, the same on every machine and in every process."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**63 - 1)


class EpochShuffle(Sampler[int]):
    """A fresh permutation each epoch, drawn from ``epoch_seed(seed, epoch)``, not the global RNG.

    ``start`` skips that many samples of the next iteration only (a resumed, half-done epoch).
    """

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples = num_samples
        self.seed = int(seed)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before every epoch."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_samples, generator=g)
        start, self.start = self.start, 0
        yield from order[start:].tolist()

    def __len__(self) -> int:
        return self.num_samples


class ResumableLoader(DataLoader):
    """A DataLoader whose order comes from ``(seed, epoch)`` and that Lightning saves and restores
    mid-epoch.

    The order is drawn by ``sampler`` (``EpochShuffle`` unless given: any sampler with
    ``set_epoch``, ``epoch`` and ``start`` counted in samples) or by ``batch_sampler`` (the same
    three, ``start`` counted in batches, such as ``LengthBuckets``). Lightning stores
    ``state_dict()`` (the epoch and the batches served in it) in every checkpoint and calls
    ``load_state_dict`` when it resumes; the loader then draws that epoch's order again and skips
    the batches that were already trained on.
    """

    def __init__(
        self,
        dataset,
        batch_size: int | None = 1,
        seed: int = 0,
        sampler: Sampler | None = None,
        batch_sampler: Sampler | None = None,
        **kwargs: Any,
    ) -> None:
        if batch_sampler is not None:
            super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
            self.order, self.samples_per_batch = batch_sampler, 1
        else:
            sampler = EpochShuffle(len(dataset), seed) if sampler is None else sampler
            super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
            self.order, self.samples_per_batch = sampler, batch_size
        self.batches_yielded = 0

    def __iter__(self) -> Iterator[Any]:
        self.batches_yielded = 0
        for batch in super().__iter__():
            self.batches_yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(getattr(self.order, "epoch", 0)), "batches": self.batches_yielded}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        batches = int(state_dict.get("batches", 0))
        if 0 < batches < len(self) and callable(getattr(self.order, "set_epoch", None)):
            self.order.set_epoch(int(state_dict.get("epoch", 0)))
            self.order.start = batches * self.samples_per_batch
