"""Batch samplers by name: `select` turns the command-line name into a sampler over the labels."""
import numpy as np

from datasampler import class_random, m_per_class, random_batches  # noqa: F401  (fill the registry)
from datasampler.base import SAMPLERS, BatchSampler, ClassBatchSampler


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
