import numpy as np
import pytest
import torch
from torch.nn import functional as F

import criteria
from criteria import distances
from criteria.margin import Margin
from criteria.miners import DistanceWeighted, RandomTriplets
from criteria.multisimilarity import MultiSimilarity
from criteria.self_distillation import Distillation, SelfDistilledCriterion
from diffusion import Settings as DiffusionSettings
from errors import UserError
from tests import reference

MS_DEFAULTS = MultiSimilarity.hyperparameters


def embedded_batch(n_classes=4, per_class=3, dim=8, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    embeddings = F.normalize(torch.randn(n_classes * per_class, dim, generator=generator, dtype=dtype), dim=1)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return embeddings.requires_grad_(), labels


def value_and_grad(loss_fn, embeddings):
    embeddings = embeddings.detach().clone().requires_grad_()
    loss = loss_fn(embeddings)
    (grad,) = torch.autograd.grad(loss, embeddings)
    return loss.detach(), grad


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("hyper", [MS_DEFAULTS, {"pos_weight": 1.0, "neg_weight": 10.0, "margin": 0.5, "thresh": 0.2}])
def test_multisimilarity_matches_loop(seed, hyper):
    embeddings, labels = embedded_batch(seed=seed)
    ours = value_and_grad(lambda e: MultiSimilarity(**hyper)(e, labels), embeddings)
    loop = value_and_grad(lambda e: reference.multisimilarity(e, labels, **hyper), embeddings)
    torch.testing.assert_close(ours, loop, rtol=1e-10, atol=1e-12)


def test_multisimilarity_float32_close_to_float64():
    embeddings, labels = embedded_batch(n_classes=8, per_class=4, dim=16, seed=3)
    ours = MultiSimilarity(**MS_DEFAULTS)(embeddings.detach().float(), labels)
    loop = reference.multisimilarity(embeddings.detach(), labels)
    assert abs(float(ours) - float(loop)) < 1e-5 * max(1.0, abs(float(loop)))


def test_multisimilarity_no_kept_anchor_is_connected_zero():
    # Two far-apart classes of identical points: no pair passes mining, the loss is a 0 that backpropagates.
    embeddings = torch.tensor([[1.0, 0], [1.0, 0], [-1.0, 0], [-1.0, 0]], requires_grad=True)
    loss = MultiSimilarity(**MS_DEFAULTS)(embeddings, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert loss.item() == 0 and torch.all(embeddings.grad == 0)


def test_multisimilarity_single_class_batch_is_zero():
    embeddings, _ = embedded_batch()
    assert MultiSimilarity(**MS_DEFAULTS)(embeddings, torch.zeros(len(embeddings), dtype=torch.long)).item() == 0


def distilled(base, kd_tau=1.0, kd_lambda=75.0, n_epochs=10, diffusion_w=0.0, diffusion_tau=1.0):
    diffusion = DiffusionSettings(w=diffusion_w, options={"tau": diffusion_tau})
    return SelfDistilledCriterion(base, Distillation(PSD=True, OBDP=diffusion_w > 0, kd_tau=kd_tau, kd_lambda=kd_lambda,
                                                     diffusion=diffusion), n_epochs)


@pytest.mark.parametrize("kd_tau,diffusion_w,diffusion_tau", [(1.0, 0.0, 1.0), (0.5, 0.0, 1.0),
                                                            (1.0, 0.99, 1.0), (1.0, 0.3, 1.0), (2.0, 0.5, 0.05)])
def test_full_objective_matches_spec(kd_tau, diffusion_w, diffusion_tau):
    """L = L_ms + e/n * kd_lambda * kd_tau^2 * KL(Q || p), Q the (diffused) teacher target."""
    student, labels = embedded_batch(seed=1)
    teacher, _ = embedded_batch(seed=2)
    epoch, n_epochs, kd_lambda = 3, 10, 75.0
    criterion = distilled(MultiSimilarity(**MS_DEFAULTS), kd_tau, kd_lambda, n_epochs, diffusion_w, diffusion_tau)
    ours = value_and_grad(lambda e: criterion(batch=e, labels=labels, teacher_batch=teacher.detach(), epoch=epoch),
                          student)
    target = reference.diffused_target(teacher.detach(), kd_tau, diffusion_w, diffusion_tau)
    weight = epoch / n_epochs * kd_lambda * kd_tau ** 2
    loop = value_and_grad(lambda e: reference.multisimilarity(e, labels)
                          + weight * reference.kl_batchmean(e, target, kd_tau), student)
    torch.testing.assert_close(ours, loop, rtol=1e-8, atol=1e-10)


def test_distillation_weight_is_zero_at_first_epoch_and_needs_no_teacher():
    criterion = distilled(MultiSimilarity(**MS_DEFAULTS))
    student, labels = embedded_batch()
    assert not criterion.needs_teacher(0) and criterion.needs_teacher(1)
    plain = MultiSimilarity(**MS_DEFAULTS)(student, labels)
    torch.testing.assert_close(criterion(batch=student, labels=labels, epoch=0), plain)
    with pytest.raises(ValueError, match="teacher_batch"):
        criterion(batch=student, labels=labels, epoch=1)


def test_teacher_receives_no_gradient():
    student, labels = embedded_batch(seed=1)
    teacher, _ = embedded_batch(seed=2)
    criterion = distilled(MultiSimilarity(**MS_DEFAULTS), diffusion_w=0.99)
    criterion(batch=student, labels=labels, teacher_batch=teacher, epoch=5).backward()
    assert teacher.grad is None and student.grad is not None


class FixedMiner:
    def __init__(self, triplets):
        self.triplets = torch.tensor(triplets).T

    def __call__(self, batch, labels, references=None):
        return tuple(self.triplets)


@pytest.mark.parametrize("margin_value,nu", [(0.2, 0.0), (1.0, 0.0), (0.2, 1 / 16), (1.0, 0.5)])
def test_margin_matches_loop_with_fixed_triplets(margin_value, nu):
    embeddings, labels = embedded_batch(seed=4)
    triplets = [(0, 1, 3), (1, 2, 7), (4, 5, 0), (9, 10, 11), (6, 8, 2), (11, 9, 1)]
    criterion = Margin(FixedMiner(triplets), distances.euclidean, n_classes=4, margin=margin_value, beta=1.2,
                       beta_lr=5e-4, nu=nu, beta_constant=False).double()
    with torch.no_grad():
        criterion.beta.copy_(torch.tensor([1.0, 1.2, 0.8, 1.5]))
    beta = criterion.beta.detach().clone().requires_grad_()

    def loop(e):
        return reference.margin(e, labels, triplets, beta, margin_value, nu)

    ours = value_and_grad(lambda e: criterion(e, labels), embeddings)
    torch.testing.assert_close(ours, value_and_grad(loop, embeddings), rtol=1e-8, atol=1e-10)
    criterion(embeddings, labels).backward()
    loop(embeddings).backward()
    torch.testing.assert_close(criterion.beta.grad, beta.grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("nu", [0.0, 1 / 16, 0.5])
def test_margin_equals_pytorch_metric_learning_with_learnt_betas(nu):
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.losses import MarginLoss

    embeddings, labels = embedded_batch(seed=4)
    triplets = [(0, 1, 3), (1, 2, 7), (4, 5, 0), (9, 10, 11), (6, 8, 2), (11, 9, 1)]
    ours = Margin(FixedMiner(triplets), distances.euclidean, n_classes=4, margin=0.2, beta=1.2, beta_lr=5e-4,
                  nu=nu, beta_constant=False).double()
    library = MarginLoss(margin=0.2, nu=nu, beta=1.2, learn_beta=True, num_classes=4,
                         distance=LpDistance(normalize_embeddings=False)).double()
    for criterion in (ours, library):
        with torch.no_grad():
            criterion.beta.copy_(torch.tensor([1.0, 1.2, 0.8, 1.5]))
    library_loss = library(embeddings, labels, indices_tuple=tuple(torch.tensor(triplets).T))
    # ours adds 1e-8 under the square root of each distance, as the released code does
    torch.testing.assert_close(ours(embeddings, labels), library_loss, rtol=1e-6, atol=1e-8)


def test_margin_beta_is_indexed_by_anchor_class_and_learns():
    embeddings, labels = embedded_batch(seed=5)
    criterion = Margin(FixedMiner([(3, 4, 0)]), distances.euclidean, n_classes=4, margin=0.2, beta=1.2, beta_lr=5e-4,
                       nu=0.0, beta_constant=False)
    criterion(embeddings, labels).backward()
    grad = criterion.beta.grad
    assert grad[1] != 0 and torch.all(grad[[0, 2, 3]] == 0)  # anchor 3 is of class 1
    assert criterion.optim_groups()[0]["lr"] == 5e-4


def test_distance_weighted_miner_draws_valid_triplets_with_inverse_density():
    torch.manual_seed(0)
    embeddings, labels = embedded_batch(n_classes=3, per_class=2, dim=4, seed=6)
    embeddings = embeddings.detach()
    miner = DistanceWeighted(lower_cutoff=0.5)
    counts = np.zeros((6, 6))
    for _ in range(4000):
        anchors, positives, negatives = miner(embeddings, labels)
        assert torch.equal(anchors, torch.arange(6))
        assert torch.all(labels[positives] == labels[anchors]) and torch.all(positives != anchors)
        assert torch.all(labels[negatives] != labels[anchors])
        np.add.at(counts, (anchors.numpy(), negatives.numpy()), 1)
    # Expected: weight 1/q(d) = d^(2-D) (1 - d^2/4)^((3-D)/2), d clipped at 0.5, over negatives only.
    dim = embeddings.shape[1]
    for anchor in range(6):
        negatives = [j for j in range(6) if labels[j] != labels[anchor]]
        d = [max(float((embeddings[anchor] - embeddings[j]).norm()), 0.5) for j in negatives]
        weights = np.array([x ** (2 - dim) * (1 - x * x / 4) ** ((3 - dim) / 2) for x in d])
        expected = weights / weights.sum()
        observed = counts[anchor, negatives] / 4000
        assert np.abs(observed - expected).max() < 0.04


def test_miners_skip_anchors_without_positive():
    embeddings, _ = embedded_batch(n_classes=3, per_class=2)
    labels = torch.tensor([0, 0, 1, 2, 2, 3])
    for miner in (DistanceWeighted(0.5), RandomTriplets()):
        anchors, positives, negatives = miner(embeddings.detach(), labels)
        assert anchors.tolist() == [0, 1, 3, 4]


def test_registry_names_and_paper_aliases():
    names = criteria.names()
    # the released scripts' <name>_obd_sd is accepted as the same loss, without doubling the list
    assert {"multisimilarity", "margin"} <= set(names) and not any(name.endswith("_obd_sd") for name in names)
    assert criteria.criterion_class("margin_obd_sd") is criteria.criterion_class("margin")
    assert criteria.base_name("margin_obd_sd") == "margin"
    with pytest.raises(ValueError, match="mines its own pairs"):
        criteria.check_miner("multisimilarity", "distance")
    assert criteria.check_miner("margin_obd_sd", None) == "distance"


@pytest.mark.parametrize("loss, labels, problem", [
    ("multisimilarity", [3, 3, 3], "holds 1 class (3 images), so multisimilarity would train nothing: to form a "
                                   "positive and a negative pair it needs 2 classes or more, one of them of 2 images "
                                   "or more; train on more classes"),
    ("triplet", [0, 1, 2], "holds 3 classes of 1 image each, so triplet would train nothing"),
    ("softmax", [0, 0], "holds 1 class (2 images), so softmax would train nothing: to form a positive and a "
                        "negative pair it needs 2 classes or more; train on more classes"),
    ("softmax", [0, 1], None),  # each image against its class's weights and the other's
    ("multisimilarity", [0, 0, 1], None),
    ("softmax+multisimilarity", [0, 1], "so multisimilarity would train nothing"),  # the most demanding one
    ("pml:ProxyAnchorLoss", [0, 1], None),  # learnt proxies: it takes num_classes
    ("pml:TripletMarginLoss", [0, 1], "so pml:TripletMarginLoss would train nothing"),
])
def test_a_training_split_without_a_positive_and_a_negative_pair_is_refused(loss, labels, problem):
    settings = criteria.LossSettings(loss)
    if problem is None:
        criteria.check_training_labels(settings, np.array(labels))
        return
    with pytest.raises(UserError) as error:
        criteria.check_training_labels(settings, np.array(labels))
    assert str(error.value).startswith("the training split holds ") and problem in str(error.value)
