"""Batch samplers by name: `select` turns the command-line name into a sampler over the labels."""
import numpy as np

from datasampler import class_random, random_batches  # noqa: F401  (fill the registry)
from datasampler.base import SAMPLERS, BatchSampler
from errors import UserError


def names() -> list[str]:
    return sorted(SAMPLERS)


def select(name: str, labels: np.ndarray, batch_size: int, samples_per_class: int, seed: int) -> BatchSampler:
    if name not in SAMPLERS:
        raise UserError(f"unknown batch sampler {name!r}; choose one of {', '.join(names())}")
    return SAMPLERS[name](labels, batch_size, samples_per_class, seed)
