"""Losses together, `--loss a+b --loss_weights w_a w_b` (criteria/mixture.py): equal to
pytorch-metric-learning's MultipleLosses on the same inputs (values and gradients in float64, the
learnt parameters' included), distilled once, each criterion's parameters at its own learning rate,
with or without a cross-batch memory; bad input is one line through main.py; and the command of
docs/method.md trains on digits."""
import json
import re
from pathlib import Path

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning.miners import BaseMiner

import architectures
import criteria
import parameters
from criteria import Mixture, SelfDistilledCriterion, distillation_loss
from tests import program
from tests.criteria.test_criteria import embedded_batch
from tests.criteria.test_memory import batches
from tests.criteria.test_training import TINY, read_csv, two_steps  # noqa: F401  (two_steps is a fixture)
from training import from_record, to_record
from training.optimisation import build_optimizer
from training.run import build_criterion
from training.settings import differences

TIGHT = {"rtol": 1e-10, "atol": 1e-10}
N_CLASSES, D = 4, 8
METHOD = Path(__file__).parent.parent.parent / "docs" / "method.md"
# the largest |ours - MultipleLosses| of each comparison, for the record (pytest -s prints them)
DIFFERENCES = {}


def settings_of(argv):
    return parameters.parse(["--embed_dim", str(D), *argv], warn=False)


def criterion_of(argv, n_classes=N_CLASSES):
    return build_criterion(settings_of(argv), n_classes).double()


class Seeded(BaseMiner):
    """pytorch-metric-learning's side: our miner's tuples, drawn from the same seed as ours."""

    def __init__(self, miner, seed):
        super().__init__()
        self.miner, self.seed = miner, seed

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        torch.manual_seed(self.seed[0])
        return self.miner(embeddings, labels)


def compare(ours, theirs, parameter_pairs, seed):
    """Ours (criteria.select's, undistilled) against a MultipleLosses on four batches: the values, the
    embeddings' gradients and each learnt parameter's (ours, theirs, transposed) gradient."""
    largest = 0.0
    for step in range(4):
        embeddings, labels = embedded_batch(n_classes=N_CLASSES, dim=D, seed=step)
        seed[0] = step
        mine, their_input = embeddings.detach().clone().requires_grad_(), embeddings.detach().clone().requires_grad_()
        torch.manual_seed(step)
        our_loss = ours(batch=mine, labels=labels)
        their_loss = theirs(their_input, labels)
        torch.testing.assert_close(our_loss, their_loss, **TIGHT)
        our_loss.backward(), their_loss.backward()
        torch.testing.assert_close(mine.grad, their_input.grad, **TIGHT)
        largest = max(largest, float((our_loss - their_loss).detach().abs()),
                      float((mine.grad - their_input.grad).abs().max()))
        for our_parameter, their_parameter, transposed in parameter_pairs:
            their_grad = their_parameter.grad.T if transposed else their_parameter.grad
            torch.testing.assert_close(our_parameter.grad, their_grad, **TIGHT)
            largest = max(largest, float((our_parameter.grad - their_grad).abs().max()))
            our_parameter.grad, their_parameter.grad = None, None
        assert our_loss > 0
    return largest


@pytest.mark.parametrize("weights", [(1.0, 0.5), (0.25, 3.0)])
def test_multisimilarity_and_softmax_equal_multiple_losses(weights):
    # A margin this wide keeps every pair, as PML's MultiSimilarityMiner with this epsilon does.
    ours = criterion_of(["--loss", "multisimilarity+softmax", "--loss_weights", *map(str, weights),
                         "--loss_multisimilarity_margin", "10", "--loss_softmax_temperature", "0.1"])
    mixture = ours.base
    assert isinstance(mixture, Mixture) and mixture.weights == weights and mixture.names == ("multisimilarity",
                                                                                           "softmax")
    _, softmax = mixture.members
    # Our MS takes the embeddings as they come (the _normalize networks normalise them): PML's dot product.
    dot = pml_distances.DotProductSimilarity(normalize_embeddings=False)
    pml_softmax = pml_losses.NormalizedSoftmaxLoss(N_CLASSES, D, temperature=0.1).double()
    with torch.no_grad():
        pml_softmax.W.copy_(softmax.class_map.T)
    theirs = pml_losses.MultipleLosses(
        [pml_losses.MultiSimilarityLoss(alpha=2.0, beta=40.0, base=0.5, distance=dot), pml_softmax],
        miners=[pml_miners.MultiSimilarityMiner(epsilon=10.0, distance=dot), None], weights=list(weights))
    DIFFERENCES[f"multisimilarity+softmax {weights}"] = compare(ours, theirs, [(softmax.class_map, pml_softmax.W,
                                                                                True)], [0])


@pytest.mark.parametrize("weights", [(1.0, 1.0), (2.0, 0.3)])
def test_contrastive_with_its_miner_and_proxyanchor_equal_multiple_losses(weights):
    flags = [] if weights == (1.0, 1.0) else ["--loss_weights", *map(str, weights)]
    ours = criterion_of(["--loss", "contrastive+proxyanchor", *flags, "--batch_mining", "distance",
                         "--miner_distance_lower_cutoff", "0.6", "--loss_contrastive_neg_margin", "1.2"])
    contrastive, proxyanchor = ours.base.members
    assert ours.base.weights == weights and contrastive.miner.lower_cutoff == 0.6
    pml_contrastive = pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.2, reducer=pml_reducers.MeanReducer(),
                                                 distance=pml_distances.LpDistance(normalize_embeddings=False))
    pml_proxyanchor = pml_losses.ProxyAnchorLoss(N_CLASSES, D, margin=0.1, alpha=32).double()
    with torch.no_grad():
        pml_proxyanchor.proxies.copy_(proxyanchor.proxies)
    seed = [0]
    theirs = pml_losses.MultipleLosses([pml_contrastive, pml_proxyanchor],
                                       miners=[Seeded(contrastive.miner, seed), None], weights=list(weights))
    DIFFERENCES[f"contrastive+proxyanchor {weights}"] = compare(
        ours, theirs, [(proxyanchor.proxies, pml_proxyanchor.proxies, False)], seed)


def test_the_mixture_is_distilled_once():
    settings = settings_of(["--loss", "multisimilarity_obd_sd+softmax", "--loss_weights", "1", "0.5", "--PSD",
                            "--OBDP", "--kd_lambda", "2", "--kd_tau", "0.5", "--n_epochs", "10"])
    criterion = build_criterion(settings, N_CLASSES).double()
    assert [type(module) for module in criterion.modules()].count(SelfDistilledCriterion) == 1
    embeddings, labels = embedded_batch(n_classes=N_CLASSES, dim=D)
    teacher, _ = embedded_batch(n_classes=N_CLASSES, dim=D, seed=1)
    total = criterion(batch=embeddings, labels=labels, teacher_batch=teacher.detach(), epoch=5)
    multisimilarity, softmax = criterion.base.members
    mixture = multisimilarity(embeddings, labels) + 0.5 * softmax(embeddings, labels)
    kd = distillation_loss(embeddings, teacher.detach(), 0.5, settings.distillation.target_diffusion())
    expected = mixture + 5 / 10 * 2.0 * 0.5 ** 2 * kd
    torch.testing.assert_close(total, expected, **TIGHT)
    torch.testing.assert_close(torch.autograd.grad(total, embeddings)[0],
                               torch.autograd.grad(expected, embeddings)[0], **TIGHT)
    torch.testing.assert_close(criterion.last_terms["dml"], mixture.detach(), **TIGHT)
    torch.testing.assert_close(criterion.last_terms["kd"], kd.detach(), **TIGHT)
    assert kd > 0


def test_each_criterions_learnt_parameters_train_at_its_own_rate():
    settings = settings_of(["--loss", "softmax+proxyanchor+margin+pml:ProxyNCALoss", "--loss_softmax_lr", "0.003",
                            "--loss_proxyanchor_lr", "0.02", "--loss_margin_beta_lr", "0.0007", "--loss_pml_lr",
                            "0.05", "--loss_weights", "1", "2", "3", "4"])
    criterion = build_criterion(settings, N_CLASSES)
    model = architectures.select("resnet18_frozen_normalize", D, pretrained=False)
    optimiser = build_optimizer(model, criterion, settings.optimisation)
    groups = {id(parameter): group for group in optimiser.param_groups for parameter in group["params"]}
    softmax, proxyanchor, margin, proxynca = criterion.base.members
    for parameter, lr in ((softmax.class_map, 0.003), (proxyanchor.proxies, 0.02), (margin.beta, 0.0007),
                          (proxynca.loss.proxies, 0.05)):
        assert (groups[id(parameter)]["lr"], groups[id(parameter)]["weight_decay"]) == (lr, 0.0)
    assert len(criterion.optim_groups()) == 4


def test_one_weighted_loss_and_canonical_settings():
    embeddings, labels = embedded_batch(n_classes=N_CLASSES, dim=D)
    plain, doubled = criterion_of(["--loss", "multisimilarity"]), criterion_of(["--loss_weights", "2"])
    torch.testing.assert_close(doubled(batch=embeddings, labels=labels), 2 * plain(batch=embeddings, labels=labels))
    # weights of 1 are no weights; <name>_obd_sd is <name>; the miner and distance in use are named
    assert settings_of(["--loss", "triplet+softmax", "--loss_weights", "1", "1"]) == \
        settings_of(["--loss", "triplet_obd_sd+softmax", "--batch_mining", "distance", "--distance", "euclidean"])
    settings = settings_of(["--loss", "contrastive+npair"]).loss  # two default miners: each its own
    assert (settings.batch_mining, [member.batch_mining for member in settings.members()]) == \
        (None, ["distance", "npair"])
    assert set(settings.miner_hyperparameters) == {"distance", "npair"}


def test_a_mixtures_record_reads_back_and_an_old_record_still_does():
    argv = ["--loss", "contrastive+proxyanchor", "--loss_weights", "1", "0.5", "--loss_proxyanchor_lr", "0.02",
            "--batch_mining", "semihard", "--miner_semihard_margin", "0.3"]
    settings = settings_of(argv)
    record = json.loads(json.dumps(to_record(settings)))  # as config.json holds it
    assert (record["loss_weights"], record["loss_proxyanchor_lr"], record["miner_semihard_margin"]) == \
        ([1.0, 0.5], 0.02, 0.3)
    assert from_record(record) == settings and differences(record, to_record(settings)) == {}
    assert differences(record, to_record(settings_of(argv[:-2])))["miner_semihard_margin"] == (0.3, 0.2)
    old = to_record(settings_of(["--loss", "margin"]))
    del old["loss_weights"]  # a run folder of an earlier version
    assert from_record(old).loss.loss_weights == () and differences(old, to_record(settings_of(["--loss",
                                                                                                 "margin"]))) == {}


def test_a_mixture_with_memory_is_the_weighted_sum_of_its_criteria_with_memory():
    """Every criterion compares the batch with the one memory; MultipleLosses takes no references, so
    the reference is each criterion behind its own memory (tests/criteria/test_memory.py holds
    those to pytorch-metric-learning's CrossBatchMemory)."""
    memory = ["--embed_dim", "6", "--xbm_size", "20", "--bs", "8"]
    mixture = criteria.select(settings_of(["--loss", "multisimilarity+contrastive", "--loss_weights", "1", "0.5",
                                           "--batch_mining", "random", *memory]).loss, embed_dim=6).double()
    alone = [criteria.select(settings_of(["--loss", *loss, *memory]).loss, embed_dim=6).double()
             for loss in (["multisimilarity"], ["contrastive", "--batch_mining", "random"])]
    assert mixture.base.takes_references
    for step, (embeddings, labels) in enumerate(batches(lone=False)):
        torch.manual_seed(step)
        ours = mixture(embeddings, labels)
        first = alone[0](embeddings, labels)
        torch.manual_seed(step)
        expected = first + 0.5 * alone[1](embeddings, labels)
        torch.testing.assert_close(ours, expected, **TIGHT)
        torch.testing.assert_close(mixture.memory.embeddings, alone[1].memory.embeddings)
    assert int(mixture.memory.stored) == 20


@pytest.mark.parametrize("argv,message", [
    (["--loss", "multisimilarity+softmax", "--loss_weights", "1"],
     "--loss_weights has 1 value but --loss multisimilarity+softmax names 2 criteria: give one weight per criterion"),
    (["--loss", "multisimilarity", "--loss_weights", "1", "0.5"], "--loss multisimilarity names 1 criterion"),
    (["--loss", "multisimilarity+multisimilarity_obd_sd"],
     "--loss multisimilarity+multisimilarity_obd_sd names multisimilarity twice"),
    (["--loss", "pml:ContrastiveLoss+pml:TripletMarginLoss"], "names a pml: criterion twice"),
    (["--loss", "multisimilarity+softmaks"], "invalid choice: 'softmaks' in the mixture 'multisimilarity+softmaks'"),
    (["--loss", "multisimilarity+softmax", "--loss_weights", "1", "-0.5"],
     "--loss_weights must be positive and finite, got -0.5"),
    (["--loss", "multisimilarity+softmax", "--loss_weights", "nan", "1"], "positive and finite, got nan"),
    (["--loss", "multisimilarity+softmax", "--loss_weights", "1", "inf"], "positive and finite, got inf"),
    (["--loss", "multisimilarity+softmax", "--loss_weights", "0", "1"], "leave the criterion out"),
    (["--loss", "multisimilarity+softmax", "--xbm_size", "10"],
     "--xbm_size: softmax compares no pairs of images, and a mixture takes a cross-batch memory only when all"),
    (["--loss", "contrastive+npair", "--batch_mining", "distance"], "npair works with --batch_mining npair"),
    (["--loss", "multisimilarity+softmax", "--distance", "cosine"], "takes a --distance"),
])
def test_bad_input_is_one_line_before_training(argv, message, capsys, tmp_path):
    assert program.run_main(TINY + argv + ["--save_path", tmp_path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not list(tmp_path.iterdir())  # no run folder: nothing started


def test_bad_weights_in_a_config_file_are_one_line(capsys, tmp_path):
    config = tmp_path / "mixture.yaml"
    config.write_text("loss: multisimilarity+softmax\nloss_weights: [1, 0.5, 2]\n")
    assert program.run_main(TINY + ["--config", config, "--save_path", tmp_path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--loss_weights has 3 values" in err, err


def documented_command():
    """The flags of the mixture command that docs/method.md shows."""
    (line,) = [line for line in METHOD.read_text().splitlines() if line.startswith("python main.py")
               and "--loss_weights" in line]
    return line.split()[2:]


def test_the_documented_mixture_trains_on_digits(two_steps, tmp_path):  # noqa: F811  (the fixture)
    argv = documented_command()
    assert re.search(r"--loss \S+\+\S+ --loss_weights", " ".join(argv)) and "--PSD" in argv and "--OBDP" in argv
    # TINY's digits run, one step per epoch: the second epoch carries the distillation term
    assert program.run_main(argv + TINY + ["--save_path", tmp_path, "--savename", "run"]) == 0
    training = read_csv(tmp_path / "run" / "training.csv")
    assert len(training) == 2 and float(training[1]["kd_weight"]) > 0 and float(training[1]["kd"]) >= 0
    assert all(float(row["loss"]) > 0 for row in training)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["loss"], config["loss_weights"]) == ("multisimilarity+softmax", [1.0, 0.5])
    assert differences(config, to_record(parameters.parse(argv + TINY + ["--save_path", str(tmp_path), "--savename",
                                                                         "run"], warn=False))) == {}
