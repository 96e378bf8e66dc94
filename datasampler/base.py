"""The batch-sampler contract and the name -> sampler table."""
import numpy as np

from errors import UserError
from registry import Registry

SAMPLERS = Registry("batch sampler")


class BatchSampler:
    """Yields lists of dataset indices, len(labels) // batch_size batches (at least one) per epoch.

    The batches of an epoch depend only on (seed, epoch), so a resumed run sees the same batches:
    call `set_epoch` before iterating each epoch. Use as DataLoader(dataset, batch_sampler=sampler).
    """

    def __init__(self, labels: np.ndarray, batch_size: int, samples_per_class: int, seed: int):
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        if seed < 0:
            raise UserError(f"seed must be a non-negative integer, got {seed}")
        self.labels = np.asarray(labels)
        self.batch_size = batch_size
        self.samples_per_class = samples_per_class
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, len(self.labels) // self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        for batch in self.batches(rng):
            yield batch.tolist()

    def batches(self, rng: np.random.Generator):
        """The epoch's batches as index arrays."""
        raise NotImplementedError


class ClassBatchSampler(BatchSampler):
    """A sampler whose batches are groups of samples_per_class images of one class each,
    batch_size // samples_per_class groups a batch, laid out group after group."""

    def __init__(self, labels: np.ndarray, batch_size: int, samples_per_class: int, seed: int):
        super().__init__(labels, batch_size, samples_per_class, seed)
        self.check_batch(batch_size, samples_per_class)
        self.classes_per_batch = batch_size // samples_per_class
        _, self.class_sizes = np.unique(self.labels, return_counts=True)
        # The images of class c are by_class[class_starts[c]: class_starts[c] + class_sizes[c]].
        self.by_class = np.argsort(self.labels, kind="stable")
        self.class_starts = np.cumsum(self.class_sizes) - self.class_sizes

    @staticmethod
    def check_batch(batch_size, samples_per_class):
        """A batch is whole groups of samples_per_class images."""
        if samples_per_class < 1 or batch_size % samples_per_class:
            raise UserError(f"batch_size {batch_size} is not a multiple of samples_per_class {samples_per_class}; "
                            "choose a batch_size that is")

    @property
    def n_classes(self) -> int:
        return len(self.class_sizes)

    def class_members(self, label_index: int) -> np.ndarray:
        start = self.class_starts[label_index]
        return self.by_class[start:start + self.class_sizes[label_index]]
