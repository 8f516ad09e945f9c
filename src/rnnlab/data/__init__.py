"""LightningDataModules: generated sequence tasks and text, with their dimensions."""

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
from rnnlab.data.names import NamesDataModule
from rnnlab.data.vocab import Vocabulary

__all__ = [
    "AddingDataModule",
    "CharsDataModule",
    "CopyDataModule",
    "CountingDataModule",
    "Dims",
    "GeneratedDataModule",
    "NamesDataModule",
    "ParityDataModule",
    "PatternDataModule",
    "RnnlabDataModule",
    "SineDataModule",
    "TensorBatches",
    "Vocabulary",
]
