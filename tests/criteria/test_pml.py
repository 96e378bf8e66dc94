"""--loss pml:<LossClass>: pytorch-metric-learning losses behind the same interface and wrapper."""
import sys

import pytest
import torch

import criteria
import parameters
from errors import UserError
from tests.criteria.test_criteria import embedded_batch
from training.run import build_criterion


def parse_error(argv, capsys):
    with pytest.raises(SystemExit):
        parameters.parse(argv)
    return capsys.readouterr().err


def test_missing_package_is_a_one_line_argparse_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pytorch_metric_learning", None)
    monkeypatch.setitem(sys.modules, "pytorch_metric_learning.losses", None)
    error = parse_error(["--loss", "pml:ContrastiveLoss"], capsys)
    assert "argument --loss: --loss pml:ContrastiveLoss needs pytorch-metric-learning: " \
           "pip install pytorch-metric-learning" in error


def test_unknown_class_lists_the_losses(capsys):
    pytest.importorskip("pytorch_metric_learning")
    error = parse_error(["--loss", "pml:TripletLossss"], capsys)
    assert "no loss 'TripletLossss'" in error and "TripletMarginLoss" in error


def test_wrapped_loss_equals_the_library_and_gets_self_distillation():
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    opt = parameters.parse(["--loss", "pml:ContrastiveLoss_obd_sd", "--PSD", "--OBDP",
                            "--loss_pml_options", '{"neg_margin": 0.8}'])
    criterion = build_criterion(opt, 4)
    embeddings, labels = embedded_batch(dtype=torch.float32)
    teacher, _ = embedded_batch(dtype=torch.float32, seed=1)
    plain = losses.ContrastiveLoss(neg_margin=0.8)(embeddings, labels)
    torch.testing.assert_close(criterion(batch=embeddings, labels=labels), plain)
    distilled = criterion(batch=embeddings, labels=labels, teacher_batch=teacher.detach(), epoch=5)
    assert criterion.last_terms["kd"] > 0 and distilled > plain
    with pytest.raises(ValueError, match="takes no miner") as error:
        criteria.check_miner("pml:ContrastiveLoss", "distance")
    assert "takes no --batch_mining" in error.value.naming("--batch_mining")


def test_learnt_proxies_reach_the_optimiser():
    pytest.importorskip("pytorch_metric_learning")
    opt = parameters.parse(["--loss", "pml:ProxyAnchorLoss", "--embed_dim", "8", "--loss_pml_lr", "0.01"])
    criterion = build_criterion(opt, 5)
    (group,) = criterion.optim_groups()
    assert group["lr"] == 0.01 and [p.shape for p in group["params"]] == [torch.Size([5, 8])]
    embeddings, labels = embedded_batch()
    criterion.double()(batch=embeddings, labels=labels).backward()
    assert group["params"][0].grad is not None


def test_bad_options_are_user_errors():
    pytest.importorskip("pytorch_metric_learning")
    for options, message in [("{margin: 1}", "not JSON"), ("[1]", "JSON object"), ('{"nope": 1}', "cannot build")]:
        opt = parameters.parse(["--loss", "pml:ContrastiveLoss", "--loss_pml_options", options])
        with pytest.raises(UserError, match=message):
            build_criterion(opt, criteria.DEFAULT_CLASSES)
