"""Data-parallel training (distributed.py): two gloo processes on the CPU take the same step as one
process on the concatenated batch (with a cross-batch memory: the same steps and the same memory),
and torchrun trains a digits epoch end to end."""
import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

import architectures
import distributed
import parameters
from tests import program
from tests.test_main import DIGITS, REPO, read_csv
from training.run import build_criterion
from training.step import TrainingStep

GLOBAL_BATCH, SAMPLES_PER_CLASS, WORLD = 8, 2, 2
OBD_SD = ["--loss", "multisimilarity", "--PSD", "--OBDP", "--diffusion_w", "0.9"]
CRITERIA = {  # name: flags; the distillation term (epoch 1 of 2) is on in all of them
    "multisimilarity+PSD+OBDP": OBD_SD,
    "margin (random mining, learned beta)+PSD+OBDP": ["--loss", "margin", "--batch_mining", "distance",
                                                      "--PSD", "--OBDP", "--diffusion_k", "3",
                                                      "--diffusion_solver", "iterative"],
    "proxyanchor (proxies)+PSD": ["--loss", "proxyanchor", "--PSD"],
    "timm ViT, multisimilarity+PSD+OBDP": ["--arch", "timm:vit_tiny_patch16_224_normalize", *OBD_SD],
    "timm ConvNeXt, multisimilarity+PSD+OBDP": ["--arch", "timm:convnext_atto_normalize", *OBD_SD],
}
# Three steps of distinct global batches wrap a 12-image memory: its entries come from both ranks' shares.
MEMORY_STEPS, N_IMAGES = 3, 3 * GLOBAL_BATCH
MEMORY = {
    "contrastive (distance mining) with a memory": ["--loss", "contrastive", "--batch_mining", "distance",
                                                    "--xbm_size", "12"],
    "multisimilarity+PSD+OBDP over the memory's graph": [*OBD_SD, "--xbm_size", "12", "--diffusion_k", "3",
                                                         "--diffusion_solver", "iterative"],
}


def one_step(flags, rank=0, world_size=1, steps=1):
    """Loss and gradients of the last of `steps` TrainingSteps on this rank's share of fixed global
    batches, and the criterion's buffers (a memory's entries) after it."""
    opt = parameters.parse(["--n_epochs", "2", "--bs", str(GLOBAL_BATCH), "--kd_lambda", "10", "--embed_dim", "8",
                            "--arch", "resnet18_frozen_normalize", *flags])
    torch.manual_seed(0)
    model = architectures.select(opt.model.arch, 8, pretrained=False, image_size=32)
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    with torch.no_grad():  # a teacher that differs from the student
        for parameter in teacher.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    criterion = build_criterion(opt, 4, N_IMAGES)
    optimizer = torch.optim.SGD([*model.parameters(), *criterion.parameters()], lr=0.0)
    step = TrainingStep(model, teacher, criterion, optimizer)
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(GLOBAL_BATCH // SAMPLES_PER_CLASS).repeat_interleave(SAMPLES_PER_CLASS)
    share = slice(rank * GLOBAL_BATCH // world_size, (rank + 1) * GLOBAL_BATCH // world_size)
    model.train()
    for index in range(steps):
        images = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=generator)
        loss = step(images[share], labels[share], epoch=1)
    gradients = {name: p.grad.clone() for name, p in [*model.named_parameters(), *criterion.named_parameters()]
                 if p.grad is not None}
    return loss.item(), gradients, {name: buffer.clone() for name, buffer in criterion.named_buffers()}


def worker(rank, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    context = distributed.setup()
    assert (context.rank, context.world_size) == (rank, WORLD)
    try:
        for name, flags in CRITERIA.items():
            outcome = one_step(flags, rank, WORLD)
            if rank == 0:
                results[name] = outcome
        for name, flags in MEMORY.items():
            outcome = one_step(flags, rank, WORLD, steps=MEMORY_STEPS)
            results[f"{name}, rank {rank}"] = outcome
    finally:
        distributed.teardown()


@pytest.mark.slow
def test_two_gloo_processes_take_the_single_process_step_on_the_concatenated_batch():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(distributed.free_port(), results), nprocs=WORLD, join=True)
        results = dict(results)
    cases = [(name, flags, 1, results[name]) for name, flags in CRITERIA.items()]
    cases += [(f"{name}, rank {rank}", flags, MEMORY_STEPS, results[f"{name}, rank {rank}"])
              for name, flags in MEMORY.items() for rank in range(WORLD)]  # every rank holds the whole memory
    for name, flags, steps, (shared_loss, shared_gradients, shared_buffers) in cases:
        loss, gradients, buffers = one_step(flags, steps=steps)
        assert shared_loss == pytest.approx(loss, abs=1e-5), name
        assert shared_gradients.keys() == gradients.keys() and gradients, name
        for parameter, gradient in gradients.items():
            torch.testing.assert_close(shared_gradients[parameter], gradient, atol=1e-5, rtol=1e-4,
                                       msg=lambda message: f"{name}, {parameter}: {message}")
        assert shared_buffers.keys() == buffers.keys(), name
        for buffer, value in buffers.items():
            torch.testing.assert_close(shared_buffers[buffer], value, atol=1e-5, rtol=1e-4,
                                       msg=lambda message: f"{name}, {buffer}: {message}")
    assert int(results[f"{next(iter(MEMORY))}, rank 1"][2]["memory.steps"]) == MEMORY_STEPS  # the memory was used


def test_rank_share_gives_each_rank_whole_classes_of_every_global_batch():
    batch = [(index, 100 + index) for index in range(12)]  # (sample, augmentation seed) pairs

    class Global:
        seed, epoch = 0, 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __len__(self):
            return 1

        def __iter__(self):
            yield batch

    shares = [next(iter(distributed.RankShare(Global(), rank, 3))) for rank in range(3)]
    assert [pair for share in shares for pair in share] == batch
    distributed.check_batch_split(12, 2, 3, class_balanced=True)
    with pytest.raises(distributed.UserError, match="multiple of 8"):
        distributed.check_batch_split(12, 2, 4, class_balanced=True)


@pytest.mark.slow
def test_torchrun_trains_a_digits_epoch_with_two_processes(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(distributed.free_port()), "main.py", *DIGITS, "--bs", "40", "--n_epochs", "1", "--PSD", "--OBDP",
               "--no_reports", "--save_path", str(tmp_path), "--savename", "ddp"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=program.PATIENCE,
                            env=program.environment())
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.listdir(tmp_path) == ["ddp"]
    assert result.stdout.count("run saved in") == 1 and "2 processes, 20 images each a step" in result.stdout
    metrics = read_csv(tmp_path / "ddp" / "metrics.csv")
    assert [(row["epoch"], row["split"]) for row in metrics] == [("0", "test"), ("1", "test")]
    assert all(0 < float(row["e_recall@1"]) <= 1 for row in metrics)
    training = read_csv(tmp_path / "ddp" / "training.csv")
    assert len(training) == 1 and float(training[0]["loss"]) > 0
