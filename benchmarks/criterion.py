"""Forward + backward time of Multi-Similarity + PSD + OBDP: this codebase's vectorised
criterion against the released code's design (a Python loop over the anchors and a dense
matrix inverse for the diffusion), both measured in this run on the same batches.

    python -m benchmarks.criterion [--sizes 112 1024] [--dim 128] [--device cpu]
"""
import statistics
import time

import torch
from torch.nn import functional as F

from benchmarks import available_device
from criteria.multisimilarity import MultiSimilarity
from criteria.self_distillation import Distillation, SelfDistilledCriterion
from errors import CommandParser

HYPER = {"pos_weight": 2.0, "neg_weight": 40.0, "margin": 0.1, "thresh": 0.5}
DISTILLATION = Distillation(PSD=True, OBDP=True, kd_tau=1.0, kd_lambda=75.0)  # w 0.99, diffusion tau 1
N_EPOCHS, EPOCH = 150, 75


def released_design(batch, labels, teacher_batch):
    """Per-anchor loop MS (as in the released criterion) plus PSD with a dense-inverse OBDP target."""
    alpha, beta, margin, thresh = (HYPER[k] for k in ("pos_weight", "neg_weight", "margin", "thresh"))
    similarity = batch @ batch.T
    per_anchor = []
    for i in range(len(batch)):
        positives = labels == labels[i]
        positives[i] = False
        anchor_pos = similarity[i][positives]
        anchor_neg = similarity[i][labels != labels[i]]
        kept_pos = anchor_pos[anchor_pos - margin < anchor_neg.max()]
        kept_neg = anchor_neg[anchor_neg + margin > anchor_pos.min()]
        if len(kept_pos) == 0 or len(kept_neg) == 0:
            continue
        per_anchor.append(torch.log(1 + torch.exp(-alpha * (kept_pos - thresh)).sum()) / alpha
                          + torch.log(1 + torch.exp(beta * (kept_neg - thresh)).sum()) / beta)
    ms = torch.stack(per_anchor).mean()
    with torch.no_grad():
        teacher_similarity = teacher_batch @ teacher_batch.T
        q = torch.softmax(teacher_similarity / DISTILLATION.kd_tau, dim=1)
        eye = torch.eye(len(batch), device=batch.device)
        transition = torch.softmax((teacher_similarity - 1e9 * eye) / DISTILLATION.diffusion.options['tau'], dim=1)
        w = DISTILLATION.diffusion.w
        target = (1 - w) * torch.inverse(eye - w * transition) @ q
    kd = F.kl_div(torch.log_softmax(similarity / DISTILLATION.kd_tau, dim=1), target, reduction="batchmean")
    weight = EPOCH / N_EPOCHS * DISTILLATION.kd_lambda * DISTILLATION.kd_tau ** 2
    return ms + weight * kd


def time_step(loss_fn, batch, labels, teacher_batch, repeats):
    times, loss = [], None
    for _ in range(repeats + 1):  # the first call warms up
        student = batch.clone().requires_grad_()
        if batch.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = loss_fn(student, labels, teacher_batch)
        loss.backward()
        if batch.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), float(loss.detach())


def compare(size, dim, device, generator):
    """(released design's median seconds, this codebase's, |loss difference|) of one forward + backward
    on a batch of `size` x `dim` embeddings in pairs of a class, with a teacher batch near it."""
    criterion = SelfDistilledCriterion(MultiSimilarity(**HYPER), DISTILLATION, N_EPOCHS)

    def vectorised(student, labels, teacher_batch):
        return criterion(batch=student, labels=labels, teacher_batch=teacher_batch, epoch=EPOCH)

    batch = F.normalize(torch.randn(size, dim, generator=generator), dim=1).to(device)
    noise = 0.1 * torch.randn(size, dim, generator=generator).to(device)
    teacher_batch = F.normalize(batch + noise, dim=1)
    labels = torch.arange(size // 2).repeat_interleave(2).to(device)
    repeats = 20 if size <= 256 else 3
    loop_time, loop_loss = time_step(released_design, batch, labels, teacher_batch, repeats)
    ours_time, ours_loss = time_step(vectorised, batch, labels, teacher_batch, repeats)
    return loop_time, ours_time, abs(loop_loss - ours_loss)


def main(argv=None):
    parser = CommandParser(command="python -m benchmarks.criterion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 1024])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--device", type=available_device, default="cpu")
    args = parser.parse_args(argv)
    print(f"MS + PSD + OBDP forward+backward, D={args.dim}, device={args.device}, "
          f"torch threads={torch.get_num_threads()}")
    print("|    B | released design (ms) | this codebase (ms) | speed-up | loss difference |")
    print("|-----:|---------------------:|-------------------:|---------:|----------------:|")
    generator = torch.Generator().manual_seed(0)
    for size in args.sizes:
        loop_time, ours_time, difference = compare(size, args.dim, args.device, generator)
        print(f"| {size:>4} | {loop_time * 1e3:>20.2f} | {ours_time * 1e3:>18.2f} | "
              f"{loop_time / ours_time:>7.1f}x | {difference:>15.2e} |")


if __name__ == "__main__":
    main()
