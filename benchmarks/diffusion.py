"""Time of every graph + solver combination of the OBDP target against the released code's
dense inverse, measured in the same run, with each result's deviation from a float64 dense
closed form on the same graph; and the default target's share of a training step.

    python -m benchmarks.diffusion [--sizes 112 512 2048 4096 8192] [--dims 128 512] [--device cpu|cuda]
"""
import statistics
import time

import torch
from torch.nn import functional as F

import architectures
import diffusion
from benchmarks import available_device
from criteria.multisimilarity import MultiSimilarity
from errors import CommandParser

W, KD_TAU, DIFFUSION_TAU = 0.99, 1.0, 1.0
COMBINATIONS = {  # name: diffusion.Settings keywords
    "softmax dense solve (default)": dict(norm="softmax"),
    "softmax k=10 iterative": dict(norm="softmax", k=10, solver="iterative"),
    "softmax k=5 iterative": dict(norm="softmax", k=5, solver="iterative"),
    "symmetric dense solve": dict(norm="symmetric"),
    "symmetric k=10 iterative": dict(norm="symmetric", k=10, solver="iterative"),
    "symmetric k=10 cg": dict(norm="symmetric", k=10, solver="cg"),
    "symmetric k=5 mutual cg": dict(norm="symmetric", k=5, knn="mutual", solver="cg"),
}


def released_dense_inverse(teacher):
    """The released code's target: softmax graph, explicit inverse, then a matrix product."""
    similarity = teacher @ teacher.T
    q = torch.softmax(similarity / KD_TAU, dim=1)
    eye = torch.eye(len(teacher), device=teacher.device)
    transition = torch.softmax((similarity - 1e9 * eye) / DIFFUSION_TAU, dim=1)
    return (1 - W) * torch.inverse(eye - W * transition) @ q


def timed(function, repeats, device):
    times, result = [], None
    for _ in range(repeats + 1):  # the first call warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), result


def settings(options):
    return diffusion.Settings(w=W, options={"tau": DIFFUSION_TAU}, **options)


def float64_closed_form(teacher, options):
    teacher = teacher.double()
    similarity = teacher @ teacher.T
    transition = settings(options).affinity(similarity).transition
    transition = transition.to_dense() if transition.layout != torch.strided else transition
    q = torch.softmax(similarity / KD_TAU, dim=1)
    target = (1 - W) * torch.linalg.solve(torch.eye(len(teacher), dtype=teacher.dtype, device=teacher.device)
                                          - W * transition, q)
    return target / target.sum(dim=1, keepdim=True)


def training_step_share(device, repeats):
    """The default target at B = 112 against one training step of the demo architecture."""
    model = architectures.select("resnet18_frozen_normalize", 16, pretrained=False).to(device).train()
    criterion = MultiSimilarity(**MultiSimilarity.hyperparameters)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(112, 3, 32, 32, device=device)
    labels = torch.arange(56, device=device).repeat_interleave(2)

    def step():
        loss = criterion(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    teacher = F.normalize(torch.randn(112, 16, device=device), dim=1)
    step_time, _ = timed(step, repeats, device)
    target_time, _ = timed(lambda: diffusion.soft_targets(teacher, KD_TAU, settings({})), repeats * 10,
                          device)
    return step_time, target_time


def clustered_teacher(size, dim, device):
    """A teacher batch like a trained model's: 2 samples per class around random class centres."""
    centres = F.normalize(torch.randn(size // 2, dim), dim=1).repeat_interleave(2, dim=0)
    return F.normalize(centres + 0.05 * torch.randn(size, dim), dim=1).to(device)


def combination_rows(size, dim, device, reference_max=4096, combinations=None):
    """For each graph + solver combination (default: all of COMBINATIONS), one row as soon as it is
    measured: name, median seconds, the dense inverse's median seconds on the same batch, and the
    largest deviation from the float64 closed form (None above `reference_max`)."""
    teacher = clustered_teacher(size, dim, device)
    repeats = 10 if size <= 512 else 3 if size <= 4096 else 1
    baseline_time, _ = timed(lambda: released_dense_inverse(teacher), repeats, device)
    for name in combinations or COMBINATIONS:
        options = COMBINATIONS[name]
        run_time, target = timed(lambda: diffusion.soft_targets(teacher, KD_TAU, settings(options)), repeats, device)
        deviation = ((target.double() - float64_closed_form(teacher, options)).abs().max().item()
                     if size <= reference_max else None)
        yield {"name": name, "seconds": run_time, "dense_inverse_seconds": baseline_time, "deviation": deviation}


def main(argv=None):
    parser = CommandParser(command="python -m benchmarks.diffusion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 512, 2048, 4096, 8192])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--device", type=available_device, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reference_max", type=int, default=4096,
                        help="largest B checked against the float64 closed form (it costs O(B^3) in float64)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"OBDP target, w={W}, kd_tau={KD_TAU}, diffusion_tau={DIFFUSION_TAU}, device={device}, "
          f"torch threads={torch.get_num_threads()}")
    print("|    B |   D | graph + solver | time (ms) | dense inverse (ms) | speed-up | max deviation |")
    print("|-----:|----:|---|----------:|-------------------:|---------:|--------------:|")
    for size in args.sizes:
        for dim in args.dims:
            for row in combination_rows(size, dim, device, args.reference_max):
                deviation = f"{row['deviation']:.1e}" if row["deviation"] is not None else "-"
                print(f"| {size:>4} | {dim:>3} | {row['name']} | {row['seconds'] * 1e3:>9.1f} | "
                      f"{row['dense_inverse_seconds'] * 1e3:>18.1f} | "
                      f"{row['dense_inverse_seconds'] / row['seconds']:>7.1f}x | {deviation:>13} |", flush=True)
    step_time, target_time = training_step_share(device, repeats=5)
    print(f"\nB=112: default target {target_time * 1e3:.2f} ms, demo architecture training step "
          f"{step_time * 1e3:.1f} ms: the target costs {100 * target_time / step_time:.2f} % of a step")


if __name__ == "__main__":
    main()
