"""Majority-vote k-NN classification, shared by the knn_top metrics, the confusion-matrix
report and `python -m evaluation.classify`."""
import numpy as np

ROW_CHUNK = 4096


def majority_vote(neighbour_labels, n_top=1):
    """The n_top most voted labels of each row of `neighbour_labels` (N x k, nearest first).

    Each neighbour casts one vote. Classes with more votes come first; between classes with
    as many votes, the one whose nearest member is nearer. Rows with fewer than n_top voted
    classes are padded with -1.
    """
    neighbour_labels = np.asarray(neighbour_labels)
    n_rows, k = neighbour_labels.shape
    predictions = np.full((n_rows, n_top), -1, dtype=np.int64)
    columns = min(n_top, k)
    for start in range(0, n_rows, ROW_CHUNK):
        labels = neighbour_labels[start:start + ROW_CHUNK]
        same = labels[:, :, None] == labels[:, None, :]
        votes = same.sum(2)
        first_of_its_class = ~np.tril(same, -1).any(2)
        # More votes first, then nearer; only each class's nearest member competes.
        key = np.where(first_of_its_class, votes * (k + 1) - np.arange(k), -1)
        order = np.argsort(-key, axis=1, kind="stable")[:, :columns]
        voted = np.take_along_axis(key, order, axis=1) >= 0
        predictions[start:start + len(labels), :columns] = np.where(
            voted, np.take_along_axis(labels, order, axis=1), -1)
    return predictions
