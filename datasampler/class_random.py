"""The released sampler (Revisiting-DML's `class_random`, used by every paper run)."""
import numpy as np

from datasampler.base import SAMPLERS, ClassBatchSampler


@SAMPLERS.register("class_random")
class ClassRandomSampler(ClassBatchSampler):
    """Each batch draws batch_size // samples_per_class classes uniformly WITH replacement, and for
    each drawn class samples_per_class of its images uniformly WITH replacement.

    A class can therefore come twice in a batch (two groups of samples_per_class images) and an
    image twice (seen under two augmentations). On CUB200 with batches of 112 and 2 samples per
    class, a batch holds about 43 distinct classes. `m_per_class` draws distinct classes instead.
    """

    def batches(self, rng: np.random.Generator):
        shape = (len(self), self.classes_per_batch)
        classes = rng.integers(self.n_classes, size=shape)
        positions = rng.integers(0, self.class_sizes[classes][..., None], size=(*shape, self.samples_per_class))
        indices = self.by_class[self.class_starts[classes][..., None] + positions]
        return indices.reshape(len(self), self.batch_size)
