"""LightningDataModules: generated sequence tasks and text, with their dimensions."""

from rnnlab.data.base import Dims, RnnlabDataModule, TensorBatches
from rnnlab.data.generated import (
    AddingDataModule,
    CopyDataModule,
    CountingDataModule,
    GeneratedDataModule,
    ParityDataModule,
    PatternDataModule,
    SineDataModule,
)

__all__ = [
    "AddingDataModule",
    "CopyDataModule",
    "CountingDataModule",
    "Dims",
    "GeneratedDataModule",
    "ParityDataModule",
    "PatternDataModule",
    "RnnlabDataModule",
    "SineDataModule",
    "TensorBatches",
]
