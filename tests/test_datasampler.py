"""datasampler/: batch composition, reproducibility per (seed, epoch) and user errors."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import datasampler
from errors import UserError


def epoch_batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_names_and_unknown_name():
    assert datasampler.names() == ["class_random", "random"]
    with pytest.raises(UserError, match="unknown batch sampler 'npair'; choose one of class_random, random"):
        datasampler.select("npair", np.zeros(4, dtype=np.int64), 2, 1, 0)


def test_class_random_batch_composition():
    labels = np.repeat(np.arange(20), 5)
    sampler = datasampler.select("class_random", labels, batch_size=12, samples_per_class=3, seed=0)
    batches = epoch_batches(sampler, 0)
    assert len(batches) == len(sampler) == 100 // 12
    for batch in batches:
        assert len(batch) == 12 and len(set(batch)) == 12  # big enough classes: no image twice
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == 4 and (counts == 3).all()


def test_class_random_repeats_images_of_tiny_classes():
    labels = np.array([0, 1, 2, 2, 2, 3, 3, 3])
    sampler = datasampler.select("class_random", labels, batch_size=8, samples_per_class=2, seed=1)
    batch = epoch_batches(sampler, 0)[0]
    assert len(batch) == 8
    assert batch.count(0) == 2 and batch.count(1) == 2  # one-image classes fill their slots by repetition


def test_batches_depend_only_on_seed_and_epoch():
    labels = np.repeat(np.arange(30), 4)
    for name in datasampler.names():
        first, second = (datasampler.select(name, labels, 16, 2, seed=7) for _ in range(2))
        assert epoch_batches(first, 3) == epoch_batches(second, 3)
        assert epoch_batches(first, 3) != epoch_batches(first, 4)
        assert epoch_batches(first, 3) != epoch_batches(datasampler.select(name, labels, 16, 2, seed=8), 3)


def test_class_random_needs_enough_classes():
    labels = np.repeat(np.arange(3), 10)
    with pytest.raises(UserError, match=r"^a batch of 8 with 2 samples per class needs 4 classes but the training "
                                        r"split has only 3; lower --bs or raise --samples_per_class$"):
        datasampler.select("class_random", labels, 8, 2, 0)


def test_class_random_needs_batch_size_multiple():
    with pytest.raises(UserError, match="--bs 7 is not a multiple of --samples_per_class 2"):
        datasampler.select("class_random", np.repeat(np.arange(10), 2), 7, 2, 0)


def test_random_covers_distinct_indices():
    labels = np.zeros(50, dtype=np.int64)
    batches = epoch_batches(datasampler.select("random", labels, 8, 2, seed=0), 0)
    assert len(batches) == 6 and all(len(batch) == 8 for batch in batches)
    indices = np.concatenate(batches)
    assert len(set(indices.tolist())) == 48 and indices.min() >= 0 and indices.max() < 50


def test_random_with_fewer_images_than_a_batch():
    batches = epoch_batches(datasampler.select("random", np.zeros(5, dtype=np.int64), 8, 2, seed=0), 0)
    assert len(batches) == 1 and sorted(batches[0]) == [0, 1, 2, 3, 4]


def test_works_as_dataloader_batch_sampler():
    labels = np.repeat(np.arange(10), 4)
    dataset = TensorDataset(torch.arange(40), torch.from_numpy(labels))
    sampler = datasampler.select("class_random", labels, 8, 2, seed=0)
    batches = list(DataLoader(dataset, batch_sampler=sampler))
    assert len(batches) == 5
    indices, batch_labels = batches[0]
    assert torch.equal(batch_labels, torch.from_numpy(labels)[indices])


def test_samples_per_class_above_the_largest_class_is_refused():
    labels = np.repeat(np.arange(6), 3)
    with pytest.raises(UserError, match="--samples_per_class 4 is above the largest training class \\(3 images\\)"):
        datasampler.select("class_random", labels, 8, 4, seed=0)
