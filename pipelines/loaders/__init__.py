"""Trainer-side loading of a published version: datasets per product (`datasets`), zero-copy batch
memory (`batch`), sample transforms (`transforms`), a resumable shuffled order (`sampler`) and views
rendered while training (`stream.DRRStream`, over the volume product), image augmentations (`augment`,
drawing the pure operations of `image_ops`) and real radiographs in the same conventions (`radiographs`).

Importing this package imports neither Prefect nor diffdrr; `pipelines.loaders.consumers` (TorchIO,
MONAI and diffdrr views of a sample) imports diffdrr when it is imported itself.
"""
from pipelines.loaders.augment import Augment
from pipelines.loaders.batch import MAX_SLOTS, collate
from pipelines.loaders.datasets import (
    DATASETS,
    DRRDataset,
    ShardDataset,
    VertebraDataset,
    VertebraPairDataset,
    VolumeDataset,
    X2CTDataset,
    open_dataset,
)
from pipelines.loaders.radiographs import RadiographDataset
from pipelines.loaders.sampler import EpochPositions, IterationState, ShuffledSamples, epoch_order, partition
from pipelines.loaders.transforms import PoissonNoise, line_integral, log_normalised, normalised, transmission

__all__ = ["Augment", "DATASETS", "DRRDataset", "EpochPositions", "IterationState", "MAX_SLOTS", "PoissonNoise", "RadiographDataset",
           "ShardDataset", "ShuffledSamples", "VertebraDataset", "VertebraPairDataset", "VolumeDataset", "X2CTDataset",
           "collate", "epoch_order", "line_integral", "log_normalised", "normalised", "open_dataset", "partition",
           "transmission"]
