"""Batch samplers by name: `select` turns the command-line name into a sampler over the labels."""
import numpy as np

from datasampler import class_random, m_per_class, random_batches  # noqa: F401  (fill the registry)
from datasampler.base import SAMPLERS, BatchSampler, ClassBatchSampler
from errors import UserError


def names() -> list[str]:
    return sorted(SAMPLERS)


def draws_class_groups(name: str) -> bool:
    """Whether the sampler's batches are groups of samples_per_class images of one class."""
    return issubclass(SAMPLERS[name], ClassBatchSampler)


def select(name: str, labels: np.ndarray, batch_size: int, samples_per_class: int, seed: int) -> BatchSampler:
    if name not in SAMPLERS:
        raise UserError(f"unknown batch sampler {name!r}; choose one of {', '.join(names())}")
    return SAMPLERS[name](labels, batch_size, samples_per_class, seed)
