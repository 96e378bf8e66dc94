"""Each criterion against a float64 loop over the pairs, triplets or proxies its formula names:
values and gradients (with respect to the embeddings and to any proxies)."""
import math

import pytest
import torch
from torch.nn import functional as F

import criteria
import parameters
from criteria import distances
from criteria.angular import Angular
from criteria.arcface import ArcFace, with_angular_margin
from criteria.circle import Circle
from criteria.contrastive import Contrastive
from criteria.eml import EnsembleMetric
from criteria.histogram import Histogram
from criteria.lifted import Lifted
from criteria.miners import LiftedStructure
from criteria.npair import NPair
from criteria.proxyanchor import ProxyAnchor
from criteria.proxynca import ProxyNCA
from criteria.quadruplet import Quadruplet
from criteria.snr import SignalToNoise
from criteria.softmax import NormalizedSoftmax
from criteria.softtriplet import SoftTriple
from criteria.subcenter_arcface import SubCenterArcFace
from criteria.triplet import Triplet
from tests import reference
from tests.criteria.test_criteria import FixedMiner, embedded_batch
from training.run import build_criterion

TIGHT = {"rtol": 1e-9, "atol": 1e-11}
TRIPLETS = [(0, 1, 3), (1, 2, 7), (4, 5, 0), (9, 10, 11), (6, 8, 2), (11, 9, 1), (3, 5, 10)]
PAIRS = [(0, 2), (1, 0), (3, 4), (5, 3), (7, 6), (9, 11), (10, 9)]
BOTH = ["euclidean", "cosine"]


def values_and_grads(loss_fn, *tensors):
    """(loss, d loss / d tensor for each tensor), on fresh leaves."""
    leaves = [tensor.detach().clone().requires_grad_() for tensor in tensors]
    loss = loss_fn(*leaves)
    return (loss.detach(), *torch.autograd.grad(loss, leaves))


def raw_batch(seed=0, n_classes=4, per_class=3, dim=8, scale=1.5):
    """Unnormalised float64 embeddings, for the losses that do not assume unit norms."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return scale * torch.randn(n_classes * per_class, dim, generator=generator, dtype=torch.float64), labels


class FixedNPairs:
    """The npair miner's output with the random positive fixed: (anchors, positives, negative mask)."""

    def __init__(self, pairs, labels):
        self.anchors, self.positives = torch.tensor(pairs).T
        self.negatives = labels[self.anchors][:, None] != labels[None, :]

    def __call__(self, batch, labels, references=None):
        return self.anchors, self.positives, self.negatives


@pytest.mark.parametrize("distance", BOTH)
@pytest.mark.parametrize("margin", [0.2, 1.0])
def test_triplet(distance, margin):
    embeddings, labels = raw_batch(seed=1)
    criterion = Triplet(FixedMiner(TRIPLETS), distances.DISTANCES[distance], margin)
    ours = values_and_grads(lambda e: criterion(e, labels), embeddings)
    loop = values_and_grads(lambda e: reference.triplet(e, TRIPLETS, margin, distance), embeddings)
    torch.testing.assert_close(ours, loop, **TIGHT)


@pytest.mark.parametrize("distance", BOTH)
@pytest.mark.parametrize("pos_margin,neg_margin", [(0.0, 1.0), (0.5, 2.5)])
def test_contrastive(distance, pos_margin, neg_margin):
    embeddings, labels = raw_batch(seed=2, scale=0.5)
    criterion = Contrastive(FixedMiner(TRIPLETS), distances.DISTANCES[distance], pos_margin, neg_margin)
    ours = values_and_grads(lambda e: criterion(e, labels), embeddings)
    loop = values_and_grads(lambda e: reference.contrastive(e, TRIPLETS, pos_margin, neg_margin, distance),
                            embeddings)
    torch.testing.assert_close(ours, loop, **TIGHT)


@pytest.mark.parametrize("distance", BOTH)
@pytest.mark.parametrize("neg_margin,l2", [(1.0, 0.005), (3.0, 0.1)])
def test_lifted(distance, neg_margin, l2):
    embeddings, labels = raw_batch(seed=3)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])  # class 3 is a single sample: no anchor
    criterion = Lifted(LiftedStructure(), distances.DISTANCES[distance], neg_margin, l2)
    ours = values_and_grads(lambda e: criterion(e, labels), embeddings)
    loop = values_and_grads(lambda e: reference.lifted(e, labels, neg_margin, l2, distance), embeddings)
    torch.testing.assert_close(ours, loop, **TIGHT)


@pytest.mark.parametrize("l2", [0.005, 0.5])
def test_npair(l2):
    embeddings, labels = raw_batch(seed=4, scale=0.6)
    criterion = NPair(FixedNPairs(PAIRS, labels), l2)
    ours = values_and_grads(lambda e: criterion(e, labels), embeddings)
    loop = values_and_grads(lambda e: reference.npair(e, labels, PAIRS, l2), embeddings)
    torch.testing.assert_close(ours, loop, **TIGHT)


@pytest.mark.parametrize("alpha,weight,l2", [(45.0, 2.0, 0.005), (36.0, 0.5, 0.1)])
def test_angular(alpha, weight, l2):
    embeddings, labels = raw_batch(seed=5, scale=0.6)
    criterion = Angular(FixedNPairs(PAIRS, labels), alpha, weight, l2)
    ours = values_and_grads(lambda e: criterion(e, labels), embeddings)
    loop = values_and_grads(lambda e: reference.angular(e, labels, PAIRS, alpha, weight, l2), embeddings)
    torch.testing.assert_close(ours, loop, **TIGHT)


@pytest.mark.parametrize("distance", BOTH)
@pytest.mark.parametrize("alpha_1,alpha_2", [(0.2, 0.2), (1.0, 0.6)])
def test_quadruplet(distance, alpha_1, alpha_2):
    embeddings, labels = raw_batch(seed=6, scale=0.5)
    criterion = Quadruplet(FixedMiner(TRIPLETS), distances.DISTANCES[distance], alpha_1, alpha_2)
    fourth = {0: 6, 1: 10, 3: 2, 5: 4, 6: 1}  # triplet position -> k, of neither a's nor n's class
    for t, k in fourth.items():
        a, _, n = TRIPLETS[t]
        assert labels[k] != labels[a] and labels[k] != labels[n]
    criterion.fourth_negatives = lambda labels, anchors, negatives: (torch.tensor(list(fourth)),
                                                                       torch.tensor(list(fourth.values())))
    ours = values_and_grads(lambda e: criterion(e, labels), embeddings)
    loop = values_and_grads(lambda e: reference.quadruplet(e, TRIPLETS, fourth, alpha_1, alpha_2, distance),
                            embeddings)
    torch.testing.assert_close(ours, loop, **TIGHT)


def test_quadruplet_fourth_sample_is_of_a_third_class():
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    anchors, negatives = torch.tensor([0, 2, 4, 0]), torch.tensor([2, 0, 6, 6])
    seen = {}
    for _ in range(200):
        rows, fourth = Quadruplet.fourth_negatives(labels, anchors, negatives)
        assert rows.tolist() == [0, 1, 2, 3]
        for row, k in zip(rows.tolist(), fourth.tolist()):
            seen.setdefault(row, set()).add(k)
    assert seen == {0: {4, 5, 6}, 1: {4, 5, 6}, 2: {0, 1, 2, 3}, 3: {2, 3, 4, 5}}
    rows, fourth = Quadruplet.fourth_negatives(torch.tensor([0, 0, 1, 1]), torch.tensor([0]), torch.tensor([2]))
    assert len(rows) == len(fourth) == 0


@pytest.mark.parametrize("margin,reg_lambda", [(0.2, 0.005), (1.5, 0.3)])
def test_snr(margin, reg_lambda):
    embeddings, labels = raw_batch(seed=7)
    criterion = SignalToNoise(FixedMiner(TRIPLETS), margin, reg_lambda)
    ours = values_and_grads(lambda e: criterion(e, labels), embeddings)
    loop = values_and_grads(lambda e: reference.snr(e, TRIPLETS, margin, reg_lambda), embeddings)
    torch.testing.assert_close(ours, loop, **TIGHT)


@pytest.mark.parametrize("nbins", [65, 11])
def test_histogram(nbins):
    embeddings, labels = embedded_batch(seed=8, dim=3)  # few dimensions: similarities spread over many bins
    ours = values_and_grads(lambda e: Histogram(nbins)(e, labels), embeddings)
    loop = values_and_grads(lambda e: reference.histogram(e, labels, nbins), embeddings)
    torch.testing.assert_close(ours, loop, **TIGHT)


@pytest.mark.parametrize("margin,gamma", [(0.4, 80.0), (0.25, 32.0)])
def test_circle(margin, gamma):
    embeddings, labels = raw_batch(seed=9)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])
    ours = values_and_grads(lambda e: Circle(margin, gamma)(e, labels), embeddings)
    loop = values_and_grads(lambda e: reference.circle(e, labels, margin, gamma), embeddings)
    torch.testing.assert_close(ours, loop, **TIGHT)


@pytest.mark.parametrize("distance", BOTH)
@pytest.mark.parametrize("beta", [100000.0, 10.0])
def test_eml(distance, beta):
    embeddings, labels = raw_batch(seed=10, scale=0.4)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])
    ours = values_and_grads(lambda e: EnsembleMetric(distances.DISTANCES[distance], beta)(e, labels), embeddings)
    loop = values_and_grads(lambda e: reference.eml(e, labels, beta, distance), embeddings)
    torch.testing.assert_close(ours, loop, **TIGHT)


def seeded(cls, **hyper):
    torch.manual_seed(11)
    return cls(n_classes=5, embed_dim=8, **hyper).double()


def proxy_case(seed=12):
    embeddings, _ = raw_batch(seed=seed)
    return embeddings, torch.tensor([0, 0, 0, 1, 1, 1, 3, 3, 4, 4, 4, 4])  # class 2 has no sample


def check_proxy_loss(criterion, proxies, loop):
    """Our loss and its gradients (embeddings, proxies) against `loop(embeddings, labels, proxies)`."""
    embeddings, labels = proxy_case()
    leaf = embeddings.clone().requires_grad_()
    loss = criterion(leaf, labels)
    ours = (loss.detach(), *torch.autograd.grad(loss, [leaf, proxies]))
    expected = values_and_grads(lambda e, p: loop(e, labels, p), embeddings, proxies)
    torch.testing.assert_close(ours, expected, **TIGHT)


@pytest.mark.parametrize("scale", [3.0, 1.0])
def test_proxynca(scale):
    criterion = seeded(ProxyNCA, lr=5e-4, scale=scale)
    check_proxy_loss(criterion, criterion.proxies, lambda e, y, p: reference.proxynca(e, y, p, scale))


@pytest.mark.parametrize("alpha,delta", [(32.0, 0.1), (8.0, 0.3)])
def test_proxyanchor(alpha, delta):
    criterion = seeded(ProxyAnchor, lr=1e-2, alpha=alpha, delta=delta)
    check_proxy_loss(criterion, criterion.proxies, lambda e, y, p: reference.proxyanchor(e, y, p, alpha, delta))


@pytest.mark.parametrize("hyper", [SoftTriple.hyperparameters,
                                   {"lr": 1e-2, "n_centroids": 3, "margin_delta": 0.2, "gamma": 0.5, "la": 20.0,
                                    "reg_weight": 1.0}])
def test_softtriplet(hyper):
    criterion = seeded(SoftTriple, **hyper)
    loop_hyper = {key: value for key, value in hyper.items() if key != "lr"}
    check_proxy_loss(criterion, criterion.centroids, lambda e, y, p: reference.softtriplet(e, y, p, **loop_hyper))


@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_normalized_softmax(temperature):
    criterion = seeded(NormalizedSoftmax, lr=1e-5, temperature=temperature)
    check_proxy_loss(criterion, criterion.class_map,
                     lambda e, y, p: reference.normalized_softmax(e, y, p, temperature))


@pytest.mark.parametrize("margin,scale", [(0.5, 16.0), (0.2, 64.0)])
def test_arcface(margin, scale):
    criterion = seeded(ArcFace, lr=5e-4, angular_margin=margin, feature_scale=scale)
    check_proxy_loss(criterion, criterion.class_map, lambda e, y, p: reference.arcface(e, y, p, margin, scale))


@pytest.mark.parametrize("margin,scale,sub_centers", [(0.5, 64.0, 3), (0.3, 16.0, 2)])
def test_subcenter_arcface(margin, scale, sub_centers):
    criterion = seeded(SubCenterArcFace, lr=5e-4, angular_margin=margin, feature_scale=scale,
                       sub_centers=sub_centers)
    check_proxy_loss(criterion, criterion.class_map,
                     lambda e, y, p: reference.arcface(e, y, p, margin, scale, sub_centers))


def test_arcface_margin_beyond_pi_falls_back_to_a_linear_penalty():
    # theta + m > pi: cos(theta + m) would rise again; the insightface fallback cos(theta) - m sin(m) keeps falling.
    margin = 0.5
    cosines = torch.tensor([[math.cos(3.0), 0.2], [math.cos(1.0), 0.1]], dtype=torch.float64)
    shifted = with_angular_margin(cosines, torch.tensor([0, 0]), margin)
    expected = [math.cos(3.0) - margin * math.sin(margin), math.cos(1.0 + margin)]
    torch.testing.assert_close(shifted[:, 0], torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(shifted[:, 1], cosines[:, 1])


def build(name, n_classes=12, **flags):
    argv = ["--loss", name, "--embed_dim", "8"] + [token for flag, value in flags.items()
                                                   for token in (f"--{flag}", str(value))]
    return build_criterion(parameters.parse(argv), n_classes).double()


@pytest.mark.parametrize("name", sorted(criteria.CRITERIA))
def test_nothing_to_mine_is_a_connected_zero_and_never_nan(name):
    """And each criterion needs what it declares (criteria.needs, held to a training split before a run)."""
    embeddings, _ = raw_batch(seed=13)
    singletons = torch.arange(len(embeddings))  # no positive anywhere
    embeddings.requires_grad_()
    loss = build(name)(batch=embeddings, labels=singletons)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss) and torch.isfinite(embeddings.grad).all()
    if criteria.needs(name) == "pairs":
        assert loss.item() == 0 and torch.all(embeddings.grad == 0)
    else:  # a classification loss has its class proxies to compare with
        assert criteria.needs(name) == "classes" and torch.any(embeddings.grad != 0)


@pytest.mark.parametrize("name", sorted(criteria.CRITERIA))
def test_float32_batches_give_a_finite_scalar_with_self_distillation(name):
    embeddings, labels = embedded_batch(dtype=torch.float32, seed=14)
    teacher, _ = embedded_batch(dtype=torch.float32, seed=15)
    opt = parameters.parse(["--loss", f"{name}_obd_sd", "--embed_dim", "8", "--PSD", "--OBDP"])
    criterion = build_criterion(opt, 4)
    loss = criterion(batch=embeddings, labels=labels, teacher_batch=teacher.detach(), epoch=3)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss) and criterion.last_terms["kd"] > 0
    assert torch.isfinite(embeddings.grad).all()


def test_learnt_parameters_reach_the_optimiser_with_their_own_lr():
    expected = {"proxynca": 5e-4, "proxyanchor": 1e-2, "softtriplet": 1e-5, "softmax": 1e-5, "arcface": 5e-4,
                "subcenter_arcface": 5e-4, "margin": 5e-4}
    for name, lr in expected.items():
        criterion = build(name, n_classes=5)
        groups = criterion.optim_groups()
        assert [group["lr"] for group in groups] == [lr]
        assert {id(p) for p in groups[0]["params"]} == {id(p) for p in criterion.parameters()}
    assert build("proxynca", **{"loss_proxynca_lr": 0.1}).optim_groups()[0]["lr"] == 0.1


def test_distances_paired_and_matrix_agree_and_are_safe_at_zero():
    x = torch.randn(5, 4, dtype=torch.float64)
    for distance in distances.DISTANCES.values():
        matrix = distance(x[:, None], x[None])
        torch.testing.assert_close(matrix[1, 3], distance(x[1], x[3]))
        assert torch.allclose(matrix.diagonal(), torch.zeros(5, dtype=torch.float64), atol=1e-7)
    leaf = x.clone().requires_grad_()
    distances.euclidean(leaf[:, None], leaf[None]).sum().backward()
    assert torch.isfinite(leaf.grad).all()
    torch.testing.assert_close(distances.euclidean(x[0], x[1]) ** 2, distances.euclidean(x[0], x[1], squared=True))
    torch.testing.assert_close(distances.cosine(x[0], x[1]), 1 - F.cosine_similarity(x[0], x[1], dim=0))


def test_distance_flag_reaches_the_losses_that_take_one():
    assert build("triplet", distance="cosine").base.distance is distances.cosine
    assert build("triplet").base.distance is distances.euclidean
    assert criteria.check_distance("contrastive_obd_sd", None) == "euclidean"
    assert criteria.check_distance("multisimilarity", None) is None
    # the library names its own argument; the command line names its flag (parameters.py)
    with pytest.raises(ValueError, match="takes no distance") as error:
        criteria.check_distance("multisimilarity", "cosine")
    assert "takes no --distance" in error.value.naming("--distance")


@pytest.mark.parametrize("loss,miner,message", [
    ("lifted", "semihard", "works with --batch_mining lifted"),
    ("angular", "distance", "works with --batch_mining npair"),
    ("triplet", "npair", "works with --batch_mining distance or random or semihard or softhard or epshn"),
    ("proxyanchor", "random", "takes no --batch_mining"),
])
def test_incompatible_miners_are_argparse_errors(loss, miner, message, capsys):
    with pytest.raises(SystemExit):
        parameters.parse(["--loss", loss, "--batch_mining", miner])
    assert message in capsys.readouterr().err


def test_every_registered_name_has_flags_with_its_defaults():
    flags = vars(parameters.build_parser().parse_args([]))
    for name, cls in criteria.CRITERIA.items():
        for param, default in cls.hyperparameters.items():
            assert flags[f"loss_{name}_{param}"] == default
        # and the settings of each loss hold its flags' values
        assert parameters.parse(["--loss", name]).loss.hyperparameters == cls.hyperparameters
    assert (flags["loss_triplet_margin"], flags["loss_proxynca_lr"], flags["loss_softtriplet_n_centroids"],
            flags["loss_histogram_nbins"], flags["loss_arcface_feature_scale"]) == (0.2, 5e-4, 2, 65, 16.0)
    assert parameters.parse(["--loss", "triplet", "--loss_triplet_margin", "0.3"]).loss.hyperparameters == \
        {"margin": 0.3}
