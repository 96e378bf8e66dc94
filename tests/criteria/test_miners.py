"""What each miner selects on hand-made batches; the expected tuples are worked out in the comments.

Points on a line are embedded as (x, 0), so every distance is a difference of positions. Where a
miner draws at random, it is run many times and the set of its choices is compared.
"""
import math

import torch

from criteria.miners import (
    EasyPositiveSemiHardNegative,
    LiftedStructure,
    NPairs,
    RandomTriplets,
    SemiHard,
    SoftHard,
)

DRAWS = 300


def on_a_line(positions):
    return torch.tensor([[x, 0.0] for x in positions], dtype=torch.float64)


def choices(miner, batch, labels):
    """{anchor: (set of positives drawn, set of negatives drawn)} over DRAWS runs."""
    torch.manual_seed(0)
    seen = {}
    for _ in range(DRAWS):
        anchors, positives, negatives = miner(batch, labels)
        for a, p, n in zip(anchors.tolist(), positives.tolist(), negatives.tolist()):
            drawn = seen.setdefault(a, (set(), set()))
            drawn[0].add(p)
            drawn[1].add(n)
    return seen


def test_random_draws_any_positive_and_any_negative():
    labels = torch.tensor([0, 0, 0, 1, 2])
    seen = choices(RandomTriplets(), on_a_line([0, 1, 2, 3, 4]), labels)
    assert seen == {0: ({1, 2}, {3, 4}), 1: ({0, 2}, {3, 4}), 2: ({0, 1}, {3, 4})}  # 3 and 4 have no positive


def test_semihard_prefers_negatives_just_beyond_the_positive():
    # x:      0.0  0.5 | 0.6  1.5 | 3.0  3.1   (classes 0 | 1 | 2), margin 0.2
    # anchor 0: d_ap 0.5, window (0.5, 0.7): negative 2 (0.6)
    # anchor 1: d_ap 0.5, negatives at 0.1, 1.0, 2.5, 2.6: none in the window -> any negative
    # anchor 2: d_ap 0.9, negatives at 0.6, 0.1, 2.4, 2.5: none in (0.9, 1.1) -> any negative
    # anchor 3: d_ap 0.9, negatives at 1.5, 1.0, 1.5, 1.6: negative 1 (1.0)
    # anchors 4, 5: d_ap 0.1, every negative beyond 1.5 -> any negative
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    seen = choices(SemiHard(margin=0.2), on_a_line([0.0, 0.5, 0.6, 1.5, 3.0, 3.1]), labels)
    assert seen == {0: ({1}, {2}), 1: ({0}, {2, 3, 4, 5}), 2: ({3}, {0, 1, 4, 5}), 3: ({2}, {1}),
                    4: ({5}, {0, 1, 2, 3}), 5: ({4}, {0, 1, 2, 3})}


def test_softhard_prefers_positives_beyond_the_nearest_negative_and_negatives_within_the_farthest_positive():
    # x:  0.0  1.0  3.0 | 1.6  2.0 | 10.0  10.2  10.4    (classes 0 | 1 | 2)
    # anchor 0: positives at 1.0, 3.0, nearest negative 1.6 -> positive 2; farthest positive 3.0 -> negatives 3, 4
    # anchor 1: positives at 1.0, 2.0, nearest negative 0.6 -> both; farthest 2.0 -> negatives 3 (0.6), 4 (1.0)
    # anchor 2: positives at 3.0, 2.0, nearest negative 1.0 -> both; farthest 3.0 -> negatives 3 (1.4), 4 (1.0)
    # anchors 3, 4: positive at 0.4, nearest negative 0.6 / 1.0: none harder -> the positive; no negative
    #   within 0.4 -> any negative
    # anchors 5, 6, 7: positives within 0.4, negatives beyond 7: no hard one of either -> any
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    seen = choices(SoftHard(), on_a_line([0.0, 1.0, 3.0, 1.6, 2.0, 10.0, 10.2, 10.4]), labels)
    assert seen == {0: ({2}, {3, 4}), 1: ({0, 2}, {3, 4}), 2: ({0, 1}, {3, 4}),
                    3: ({4}, {0, 1, 2, 5, 6, 7}), 4: ({3}, {0, 1, 2, 5, 6, 7}),
                    5: ({6, 7}, {0, 1, 2, 3, 4}), 6: ({5, 7}, {0, 1, 2, 3, 4}), 7: ({5, 6}, {0, 1, 2, 3, 4})}


def test_easy_positive_semihard_negative():
    # Directions in degrees (norms vary: only the angle counts), classes 0 0 0 1 1 2:
    #   0: 0, 1: 20, 2: 90, 3: 45, 4: 180, 5: 10
    # anchor 0: easiest positive 1 (20 deg); negatives farther than 20: 3 (45), 4 (180) -> hardest 3
    # anchor 1: easiest positive 0 (20); negatives farther than 20: 3 (25), 4 (160) -> 3
    # anchor 2: easiest positive 1 (70); negatives farther than 70: 4 (90), 5 (80) -> 5
    # anchor 3: only positive 4 (135); every negative is nearer -> dropped
    # anchor 4: only positive 3 (135); negatives farther: 0 (180), 1 (160), 5 (170) -> 1
    # anchor 5: no positive
    degrees = [0, 20, 90, 45, 180, 10]
    norms = [1.0, 2.0, 0.5, 3.0, 1.0, 1.5]
    batch = torch.tensor([[r * math.cos(math.radians(d)), r * math.sin(math.radians(d))]
                          for d, r in zip(degrees, norms)], dtype=torch.float64)
    anchors, positives, negatives = EasyPositiveSemiHardNegative()(batch, torch.tensor([0, 0, 0, 1, 1, 2]))
    assert list(zip(anchors.tolist(), positives.tolist(), negatives.tolist())) == \
        [(0, 1, 3), (1, 0, 3), (2, 1, 5), (4, 3, 1)]


def test_npair_takes_one_positive_and_every_other_class_as_negatives():
    labels = torch.tensor([0, 0, 1, 1, 2])
    anchors, positives, negative_mask = NPairs()(on_a_line([0, 1, 2, 3, 4]), labels)
    assert anchors.tolist() == [0, 1, 2, 3] and positives.tolist() == [1, 0, 3, 2]
    assert negative_mask.tolist() == [[False, False, True, True, True], [False, False, True, True, True],
                                      [True, True, False, False, True], [True, True, False, False, True]]


def test_lifted_takes_every_positive_and_every_negative():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    anchors, positive_mask, negative_mask = LiftedStructure()(on_a_line(range(6)), labels)
    assert anchors.tolist() == [0, 1, 2, 3, 4]
    assert [set(torch.nonzero(row).squeeze(1).tolist()) for row in positive_mask] == \
        [{1, 2}, {0, 2}, {0, 1}, {4}, {3}]
    assert [set(torch.nonzero(row).squeeze(1).tolist()) for row in negative_mask] == \
        [{3, 4, 5}, {3, 4, 5}, {3, 4, 5}, {0, 1, 2, 5}, {0, 1, 2, 5}]


def test_miners_see_no_gradient_and_accept_a_single_class():
    batch = on_a_line([0, 1, 2]).requires_grad_()
    for miner in (RandomTriplets(), SemiHard(0.2), SoftHard(), EasyPositiveSemiHardNegative()):
        anchors, positives, negatives = miner(batch, torch.zeros(3, dtype=torch.long))
        assert len(anchors) == len(positives) == len(negatives) == 0
