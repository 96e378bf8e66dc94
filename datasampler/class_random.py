"""Batches of batch_size // samples_per_class distinct random classes, samples_per_class images each."""
import numpy as np

from datasampler.base import BatchSampler, register
from errors import UserError


@register("class_random")
class ClassRandomSampler(BatchSampler):
    def __init__(self, labels: np.ndarray, batch_size: int, samples_per_class: int, seed: int):
        super().__init__(labels, batch_size, samples_per_class, seed)
        if samples_per_class < 1 or batch_size % samples_per_class:
            raise UserError(f"--bs {batch_size} is not a multiple of --samples_per_class {samples_per_class}; "
                            "choose a batch size that is")
        self.classes_per_batch = batch_size // samples_per_class
        _, counts = np.unique(self.labels, return_counts=True)
        self.class_members = np.split(np.argsort(self.labels, kind="stable"), np.cumsum(counts)[:-1])
        largest = max(len(members) for members in self.class_members)
        if samples_per_class > largest:
            raise UserError(f"--samples_per_class {samples_per_class} is above the largest training class "
                            f"({largest} images); lower --samples_per_class")
        if len(self.class_members) < self.classes_per_batch:
            raise UserError(f"a batch of {batch_size} with {samples_per_class} samples per class needs "
                            f"{self.classes_per_batch} classes but the training split has only "
                            f"{len(self.class_members)}; lower --bs or raise --samples_per_class")

    def batches(self, rng: np.random.Generator):
        for _ in range(len(self)):
            classes = rng.choice(len(self.class_members), self.classes_per_batch, replace=False)
            yield np.concatenate([self._draw(self.class_members[c], rng) for c in classes])

    def _draw(self, members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # a class smaller than samples_per_class repeats images rather than shrink the batch
        return rng.choice(members, self.samples_per_class, replace=len(members) < self.samples_per_class)
