"""Batches cut from a random permutation of the dataset, ignoring classes."""
import numpy as np

from datasampler.base import SAMPLERS, BatchSampler


@SAMPLERS.register("random")
class RandomSampler(BatchSampler):
    def batches(self, rng: np.random.Generator):
        order = rng.permutation(len(self.labels))
        if len(order) < self.batch_size:
            return [order]  # a training set smaller than one batch still trains, on short batches
        # the last incomplete batch is dropped
        return order[: len(self) * self.batch_size].reshape(len(self), self.batch_size)
