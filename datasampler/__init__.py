"""Batch samplers by name: `select` (or `batches` with BatchSettings) turns a sampler's name into a
sampler over the labels."""
from dataclasses import dataclass

import numpy as np

from datasampler import class_random, m_per_class, random_batches  # noqa: F401  (fill the registry)
from datasampler.base import SAMPLERS, BatchSampler, ClassBatchSampler
from errors import SettingError, UserError


@dataclass(frozen=True)
class BatchSettings:
    """The batches of an epoch: `bs` images drawn by the sampler `data_sampler`, in groups of
    `samples_per_class` images of a class for the class-balanced samplers. The paper's: 112 images,
    2 a class, the released sampler (class_random)."""
    bs: int = 112
    samples_per_class: int = 2
    data_sampler: str = "class_random"

    def __post_init__(self):
        SAMPLERS.get(self.data_sampler)
        for name in ("bs", "samples_per_class"):
            if getattr(self, name) <= 0:
                raise SettingError(f"{name} must be positive, got {getattr(self, name)}", [name])
        try:
            check_batch(self.data_sampler, self.bs, self.samples_per_class)
        except UserError as error:
            raise SettingError(str(error), {"batch_size": "bs", "samples_per_class": "samples_per_class"}) from None


def names() -> list[str]:
    return SAMPLERS.names()


def draws_class_groups(name: str) -> bool:
    """Whether the sampler's batches are groups of samples_per_class images of one class."""
    return issubclass(SAMPLERS.get(name), ClassBatchSampler)


def check_batch(name: str, batch_size: int, samples_per_class: int) -> None:
    """UserError when the sampler `name` cannot draw batches of batch_size with samples_per_class."""
    if draws_class_groups(name):
        ClassBatchSampler.check_batch(batch_size, samples_per_class)


def select(name: str, labels: np.ndarray, batch_size: int, samples_per_class: int, seed: int) -> BatchSampler:
    return SAMPLERS.get(name)(labels, batch_size, samples_per_class, seed)


def batches(settings: BatchSettings, labels: np.ndarray, seed: int) -> BatchSampler:
    """The sampler `settings` describe over `labels`, its batches drawn from `seed`."""
    return select(settings.data_sampler, labels, settings.bs, settings.samples_per_class, seed)
