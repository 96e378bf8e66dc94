"""Batches of distinct classes (pytorch-metric-learning's MPerClassSampler idea)."""
import numpy as np

from datasampler.base import SAMPLERS, ClassBatchSampler
from errors import UserError


@SAMPLERS.register("m_per_class")
class MPerClassSampler(ClassBatchSampler):
    """Each batch holds batch_size // samples_per_class DISTINCT classes, drawn uniformly without
    replacement, with samples_per_class distinct images of each (drawn with replacement only in
    a class smaller than samples_per_class).

    Unlike the released `class_random`, every batch has the full number of classes and no image
    twice, so every positive pair is two different images: more negatives and fewer trivial
    positives per batch than in the paper's runs.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, samples_per_class: int, seed: int):
        super().__init__(labels, batch_size, samples_per_class, seed)
        largest = self.class_sizes.max()
        if samples_per_class > largest:
            raise UserError(f"samples_per_class {samples_per_class} is above the largest training class "
                            f"({largest} images); lower samples_per_class")
        if self.n_classes < self.classes_per_batch:
            raise UserError(f"sampler m_per_class with a batch of {batch_size} and {samples_per_class} "
                            f"samples per class needs {self.classes_per_batch} classes but the training split has "
                            f"only {self.n_classes}; lower batch_size, raise samples_per_class or use "
                            "sampler class_random")

    def batches(self, rng: np.random.Generator):
        for _ in range(len(self)):
            classes = rng.choice(self.n_classes, self.classes_per_batch, replace=False)
            yield np.concatenate([self._draw(self.class_members(c), rng) for c in classes])

    def _draw(self, members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # a class smaller than samples_per_class repeats images rather than shrink the batch
        return rng.choice(members, self.samples_per_class, replace=len(members) < self.samples_per_class)
