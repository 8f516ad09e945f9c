"""LightningDataModules: generated sequence tasks, text and images read as sequences, with their
dimensions."""

from rnnlab.data.base import Dims, RnnlabDataModule, TensorBatches
from rnnlab.data.chars import CharsDataModule
from rnnlab.data.generated import (
    AddingDataModule,
    CopyDataModule,
    CountingDataModule,
    GeneratedDataModule,
    ParityDataModule,
    PatternDataModule,
    SineDataModule,
)
from rnnlab.data.images import DigitsDataModule, MnistDataModule
from rnnlab.data.names import NamesDataModule
from rnnlab.data.vocab import Vocabulary

__all__ = [
    "AddingDataModule",
    "CharsDataModule",
    "CopyDataModule",
    "CountingDataModule",
    "DigitsDataModule",
    "Dims",
    "GeneratedDataModule",
    "MnistDataModule",
    "NamesDataModule",
    "ParityDataModule",
    "PatternDataModule",
    "RnnlabDataModule",
    "SineDataModule",
    "TensorBatches",
    "Vocabulary",
]
