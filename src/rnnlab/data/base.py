"""What every rnnlab datamodule shares: the dimension contract and fast whole-tensor batching."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from rnnlab.config_checks import integer, require
from rnnlab.data.resumable import ResumableLoader, epoch_seed


@dataclass(frozen=True)
class Dims:
    """What a datamodule tells the entry point, so no size is typed twice in the configs.

    ``task``: ``classification``, ``regression`` or ``lm``; ``target``: ``last`` (one target per
    sequence) or ``sequence`` (a target at every step). Exactly one of ``input_size`` (feature
    vectors) and ``vocab_size`` (token ids) is set. ``class_names`` name the classes of a real
    data set; ``class_weights`` (one per class) weight the loss when the data asks for it.
    """

    task: str
    target: str
    output_size: int
    input_size: int | None = None
    vocab_size: int | None = None
    class_names: tuple[str, ...] | None = None
    class_weights: tuple[float, ...] | None = None

    def net_kwargs(self) -> dict:
        """The keyword arguments a net is instantiated with."""
        kwargs = {"output_size": self.output_size, "output_mode": self.target}
        if self.vocab_size is not None:
            kwargs["vocab_size"] = self.vocab_size
        else:
            kwargs["input_size"] = self.input_size
        return kwargs


class TensorBatches(Dataset):
    """A dataset of whole tensors whose batches are sliced in one indexing operation.

    ``DataLoader`` calls ``__getitems__`` with a batch of indices, so a batch costs one gather per
    tensor instead of one Python call per sample; samplers (and Lightning's distributed sampler)
    still work as with any map-style dataset.
    """

    def __init__(self, **tensors: torch.Tensor) -> None:
        sizes = {len(t) for t in tensors.values()}
        if len(sizes) != 1:
            raise ValueError(
                f"tensors of different lengths: { {k: len(v) for k, v in tensors.items()} }"
            )
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.tensors.items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices)
        batch = {k: v[index] for k, v in self.tensors.items()}
        if "lengths" in batch:
            # trim the padding that no sequence of this batch needs
            full, longest = batch["x"].shape[1], int(batch["lengths"].max())
            if longest < full:
                for k in ("x", "y"):
                    if batch[k].dim() >= 2 and batch[k].shape[1] == full:
                        batch[k] = batch[k][:, :longest]
        return batch


class EpochShuffleShare(DistributedSampler):
    """One process's share of the single-process training order (``EpochShuffle``'s permutation).

    Process ``r`` of ``W`` takes every W-th sample of the epoch's permutation, so its i-th batch
    and the other processes' i-th batches together hold exactly the i-th batch of one process
    with the whole global batch: DDP trains on the same global batches. Lightning sets the epoch
    and, this being a DistributedSampler, leaves it in place.

    ``start`` skips that many samples of this process's share in the next iteration only (a
    resumed, half-done epoch: every process has served the same number of batches).
    """

    def __init__(self, dataset: Dataset, world_size: int, rank: int, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def __iter__(self):
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        repeats = -(-self.total_size // len(order))  # pad to a multiple of the world
        order = (order * repeats)[: self.total_size]
        start, self.start = self.start, 0
        return iter(order[self.rank : self.total_size : self.num_replicas][start:])


def _identity(batch):
    return batch


class RnnlabDataModule(L.LightningDataModule):
    """Base for rnnlab datamodules: ``dims``, batch size checks and the three dataloaders."""

    def __init__(self, batch_size: int = 64, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        require("data.batch_size", batch_size, integer(1))
        require("data.num_workers", num_workers, integer(0))
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.splits: dict[str, TensorBatches] = {}

    @property
    def dims(self) -> Dims:
        raise NotImplementedError

    def per_device_batch_size(self) -> int:
        """``batch_size`` is the global batch: each of the world's processes takes its share."""
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world:
            raise ValueError(
                f"data.batch_size={self.batch_size} is the global batch and must divide evenly "
                f"across {world} processes"
            )
        return self.batch_size // world

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.splits:
            self.setup()
        kwargs = dict(
            batch_size=self.per_device_batch_size(),
            num_workers=self.num_workers,
            collate_fn=_identity,
            persistent_workers=self.num_workers > 0,
        )
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if shuffle and world == 1:
            # an order from (seed, epoch) alone, resumable mid-epoch
            return ResumableLoader(self.splits[split], seed=self.seed, **kwargs)
        if shuffle:  # this process's share of the same order, resumable mid-epoch too
            sampler = EpochShuffleShare(self.splits[split], world, rank, seed=int(self.seed))
            return ResumableLoader(self.splits[split], sampler=sampler, **kwargs)
        return DataLoader(self.splits[split], shuffle=False, **kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
