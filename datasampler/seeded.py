"""Per-sample augmentation seeds, so a training image's random crop and flip depend only on
(seed, epoch, position in the epoch): not on the number of dataloader workers, on whether they
persist, or on where an interrupted run was resumed."""
import numpy as np
import torch
from torch.utils.data import Dataset


class SeededBatches:
    """Wraps a batch sampler: yields [(index, sample_seed), ...] batches."""

    def __init__(self, sampler):
        self.sampler = sampler

    def set_epoch(self, epoch):
        self.sampler.set_epoch(epoch)

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        seeds = np.random.default_rng([self.sampler.seed, self.sampler.epoch, 1])
        for batch in self.sampler:
            indices = np.asarray(batch).tolist()
            yield list(zip(indices, seeds.integers(0, 2 ** 62, size=len(indices)).tolist()))


class SeededSamples(Dataset):
    """Wraps a dataset: item (index, seed) is dataset[index] with torch's RNG seeded by `seed`
    for the transforms, the caller's RNG state left untouched."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
