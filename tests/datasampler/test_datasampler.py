"""datasampler/: batch composition, reproducibility per (seed, epoch) and user errors."""
import numpy as np
import pytest
import torch
from scipy.stats import binom
from torch.utils.data import DataLoader, TensorDataset

import datasampler
import distributed
from datasampler.seeded import SeededBatches
from errors import UserError


def epoch_batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def labels_of(class_sizes):
    return np.repeat(np.arange(len(class_sizes)), class_sizes)


def shaped_like(dataset):
    """Training labels with about the number of classes and images of a benchmark's training split."""
    rng = np.random.default_rng(0)
    if dataset == "cub200":  # 100 classes, 5,864 images: mostly 60 a class, a few down to about 40
        sizes = 60 - np.minimum(rng.geometric(0.5, size=100) - 1, 20)
    elif dataset == "cars196":  # 98 classes, 8,054 images, 40 to 120 a class
        sizes = 40 + rng.multinomial(8054 - 98 * 40, np.full(98, 1 / 98))
    else:  # online_products: 11,318 classes, 59,551 images, 2 to 12 a class
        sizes = np.clip(rng.geometric(1 / 4.3, size=11318) + 1, 2, 12)
    return labels_of(sizes)


def released_rule_expectations(class_sizes, batch_size, samples_per_class):
    """Per batch, under the released rule (batch_size / samples_per_class classes drawn uniformly
    with replacement, then samples_per_class images of each drawn class uniformly with
    replacement): the expected numbers of distinct classes, of classes with 4 or more images and
    of repeated images (batch_size minus the distinct images), in closed form. Of C classes, a
    class is drawn j times with the binomial probability (m draws, p = 1/C); an image of a class
    of n images is in one draw with probability (1 - (1 - 1/n)^s) / C."""
    sizes = np.asarray(class_sizes, dtype=np.float64)
    n_classes, draws = len(sizes), batch_size // samples_per_class
    distinct_classes = n_classes * binom.sf(0, draws, 1 / n_classes)
    four_or_more = n_classes * binom.sf(-(-4 // samples_per_class) - 1, draws, 1 / n_classes)
    in_one_draw = (1 - (1 - 1 / sizes) ** samples_per_class) / n_classes
    distinct_images = (sizes * (1 - (1 - in_one_draw) ** draws)).sum()
    return np.array([distinct_classes, four_or_more, batch_size - distinct_images])


def batch_statistics(batches, labels):
    """Per batch: distinct classes, classes with 4 or more images, repeated images."""
    rows = []
    for batch in batches:
        _, counts = np.unique(labels[batch], return_counts=True)
        rows.append([len(counts), (counts >= 4).sum(), len(batch) - len(np.unique(batch))])
    return np.array(rows, dtype=np.float64)


def test_names_and_unknown_name():
    assert datasampler.names() == ["class_random", "m_per_class", "random"]
    with pytest.raises(UserError, match="unknown batch sampler 'npair'; choose one of class_random, m_per_class, "
                                        "random"):
        datasampler.select("npair", np.zeros(4, dtype=np.int64), 2, 1, 0)
    assert datasampler.draws_class_groups("class_random") and datasampler.draws_class_groups("m_per_class")
    assert not datasampler.draws_class_groups("random")


@pytest.mark.parametrize("dataset", ["cub200", "cars196", "online_products"])
def test_class_random_draws_as_the_released_sampler(dataset):
    labels = shaped_like(dataset)
    sampler = datasampler.select("class_random", labels, batch_size=112, samples_per_class=2, seed=0)
    assert len(sampler) == len(labels) // 112
    batches = [batch for epoch in range(-(-3000 // len(sampler))) for batch in epoch_batches(sampler, epoch)]
    assert all(len(batch) == 112 for batch in batches)
    stats = batch_statistics(batches, labels)
    means, errors = stats.mean(0), stats.std(0) / np.sqrt(len(stats))
    theory = released_rule_expectations(np.bincount(labels), 112, 2)
    assert np.all(np.abs(means - theory) <= 5 * errors + 1e-9), (means, theory, errors)
    assert theory[2] > 1  # images do come twice: this is not m_per_class


def test_released_rule_figures_on_cub():
    # CUB's 100 training classes, batches of 112 with 2 samples per class: 56 draws
    distinct, four_or_more, _ = released_rule_expectations(np.full(100, 59), 112, 2)
    assert round(distinct, 1) == 43.0 and round(four_or_more, 1) == 10.8


def test_class_random_draws_each_image_with_the_released_probability():
    # Each group of a batch is class c with probability 1/C, then each slot an image of c with 1/n_c.
    sizes = np.array([1, 2, 3, 6])
    labels = labels_of(sizes)
    sampler = datasampler.select("class_random", labels, batch_size=4, samples_per_class=2, seed=3)
    batches = np.array([batch for epoch in range(8000) for batch in epoch_batches(sampler, epoch)])
    slots = batches.size
    observed = np.bincount(batches.ravel(), minlength=len(labels)) / slots
    expected = 1 / (len(sizes) * sizes[labels])
    np.testing.assert_allclose(observed, expected, atol=5 * np.sqrt(expected / slots).max())
    groups = batches.reshape(-1, 2)
    assert np.all(labels[groups[:, 0]] == labels[groups[:, 1]])  # a group is one class
    same_image = groups[:, 0] == groups[:, 1]
    assert same_image[labels[groups[:, 0]] == 0].all()  # the one-image class repeats its image
    assert 0.1 < same_image[labels[groups[:, 0]] == 1].mean() < 0.9  # the two-image class sometimes does


def test_class_random_needs_no_more_classes_than_a_batch():
    labels = labels_of([10, 10, 10])
    batch = epoch_batches(datasampler.select("class_random", labels, 8, 2, 0), 0)[0]
    assert len(batch) == 8 and len(np.unique(labels[batch])) <= 3
    # samples_per_class above every class's size repeats images, as the released sampler does
    batch = epoch_batches(datasampler.select("class_random", labels_of([2, 3]), 8, 4, 0), 0)[0]
    assert len(batch) == 8


@pytest.mark.parametrize("dataset", ["cub200", "online_products"])
def test_m_per_class_draws_distinct_classes_and_images(dataset):
    labels = shaped_like(dataset)
    sampler = datasampler.select("m_per_class", labels, batch_size=112, samples_per_class=2, seed=0)
    for batch in epoch_batches(sampler, 0)[:50]:
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == 56 and (counts == 2).all()
        assert len(np.unique(batch)) == 112
    classes = np.concatenate([np.unique(labels[batch]) for batch in epoch_batches(sampler, 1)])
    assert len(np.unique(classes)) > 0.9 * min(len(classes), labels.max() + 1)  # classes vary between batches


def test_m_per_class_batch_composition():
    labels = np.repeat(np.arange(20), 5)
    sampler = datasampler.select("m_per_class", labels, batch_size=12, samples_per_class=3, seed=0)
    batches = epoch_batches(sampler, 0)
    assert len(batches) == len(sampler) == 100 // 12
    for batch in batches:
        assert len(batch) == 12 and len(set(batch)) == 12
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == 4 and (counts == 3).all()


def test_m_per_class_repeats_images_of_tiny_classes_only():
    labels = np.array([0, 1, 2, 2, 2, 3, 3, 3])
    sampler = datasampler.select("m_per_class", labels, batch_size=8, samples_per_class=2, seed=1)
    batch = epoch_batches(sampler, 0)[0]
    assert len(batch) == 8
    assert batch.count(0) == 2 and batch.count(1) == 2  # one-image classes fill their slots by repetition
    assert len(set(batch) - {0, 1}) == 4


def test_m_per_class_needs_enough_classes():
    labels = np.repeat(np.arange(3), 10)
    with pytest.raises(UserError, match=r"^sampler m_per_class with a batch of 8 and 2 samples per class needs "
                                        r"4 classes but the training split has only 3; lower batch_size, raise "
                                        r"samples_per_class or use sampler class_random$"):
        datasampler.select("m_per_class", labels, 8, 2, 0)


def test_m_per_class_refuses_samples_per_class_above_the_largest_class():
    labels = np.repeat(np.arange(6), 3)
    with pytest.raises(UserError, match="samples_per_class 4 is above the largest training class \\(3 images\\)"):
        datasampler.select("m_per_class", labels, 8, 4, seed=0)


@pytest.mark.parametrize("name", ["class_random", "m_per_class"])
def test_class_samplers_need_batch_size_multiple(name):
    with pytest.raises(UserError, match="batch_size 7 is not a multiple of samples_per_class 2"):
        datasampler.select(name, np.repeat(np.arange(10), 2), 7, 2, 0)


def test_batches_depend_only_on_seed_and_epoch():
    labels = np.repeat(np.arange(30), 4)
    for name in datasampler.names():
        first, second = (datasampler.select(name, labels, 16, 2, seed=7) for _ in range(2))
        assert epoch_batches(first, 3) == epoch_batches(second, 3)
        assert epoch_batches(first, 3) != epoch_batches(first, 4)
        assert epoch_batches(first, 3) != epoch_batches(datasampler.select(name, labels, 16, 2, seed=8), 3)


def test_class_random_rank_shares_hold_whole_groups_and_seeds_follow_positions():
    labels = labels_of([3, 1, 4, 2, 5])
    sampler = SeededBatches(datasampler.select("class_random", labels, 12, 2, seed=4))
    global_batches = epoch_batches(sampler, 2)
    shares = [epoch_batches(distributed.RankShare(sampler, rank, 3), 2) for rank in range(3)]
    for step, batch in enumerate(global_batches):
        assert [pair for rank in range(3) for pair in shares[rank][step]] == batch
        for rank in range(3):
            indices = np.array([index for index, _ in shares[rank][step]])
            assert len(indices) == 4 and np.all(labels[indices[0::2]] == labels[indices[1::2]])
        seeds = [seed for _, seed in batch]
        assert len(set(seeds)) == len(seeds)  # an image drawn twice gets two augmentations


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
