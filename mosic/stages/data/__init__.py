"""Stage two's data path: clips and their tracks read from track stores, augmented, batched."""

from mosic.stages.data.augment import AugmentConfig, augment_clip
from mosic.stages.data.clips import ClipConfig, ClipDataset
from mosic.stages.data.sampler import ClipBatchSampler, EpochBatches

__all__ = [
    "AugmentConfig",
    "ClipBatchSampler",
    "ClipConfig",
    "ClipDataset",
    "EpochBatches",
    "augment_clip",
]
