"""Every GPU measurement in one run of under 8 minutes, for the day a GPU is lent: the training step
of ResNet50 and ViT-S/16 (baseline, +PSD, +OBD-SD; bf16, torch.compile, channels_last), the
loader on generated JPEGs of CUB's size, the criterion and the B = 4096 OBDP target against the
released design, the evaluation at Stanford Online Products' size, and, with two GPUs or more,
the equality of a 2-process NCCL step with one process on the concatenated batch. Writes one JSON
and prints (and writes) one table.

    python -m benchmarks.gpu [--out Training_Results/bench_gpu.json]   # needs a CUDA GPU
    python -m benchmarks.gpu --quick                                    # tiny sizes on the CPU

The networks start from random weights (not_pretrained): ImageNet weights cannot be downloaded
here, and a step's time does not depend on the weights' values.

Time guards. Each section runs under its own limit (SECTIONS' budget_s, at most what is left
of --time_limit): a SIGALRM stops it at the limit, the section is recorded as stopped with the
figures it had, and the next one starts. The budgets add up to 450 s; with Python's and CUDA's
start-up the run ends before 8 minutes even when every section runs into its limit. No GPU was
lent to this work, so the budgets are estimates, not measurements: a ResNet50 or ViT-S/16
training step at B = 112, 224 px in bf16 takes some 40-60 ms on an H100 (published training
throughputs of 2,000-3,000 images/s), and torch.compile compiles each network once (student
and teacher, shared by the three runs: benchmarks.train_step.step_times) in about a minute
each, cold; 20 timed rounds of 5 measurements are then some 5 s. The SOP-size evaluation took
38 s on 2 CPU cores (benchmarks/README.md), most of it the 1000-deep search (on the GPU here)
and the k-means (faiss on the 16 CPU cores). The B = 4096 targets took 0.2-3.3 s each on 2 CPU
cores, and a GPU is faster. The loader section encodes 2,400 JPEGs (2 ms each on one core here)
before reading them.
"""
import argparse
import contextlib
import copy
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import torch

import architectures
import distributed
import evaluation
import parameters
from benchmarks import criterion as criterion_bench
from benchmarks import diffusion as diffusion_bench
from benchmarks import evaluation as evaluation_bench
from benchmarks import train_step
from errors import CommandParser, UserError, run_command
from training.run import build_criterion
from training.step import TrainingStep

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = ("random init (not_pretrained): ImageNet weights are not available offline; "
           "a step's time does not depend on them")
CUB = {"classes": 200, "source_size": (500, 375)}  # CUB-200-2011's classes (100 train) and a typical image's size

# Sizes of the full run (on a GPU) and of --quick (on the CPU, a few seconds in all).
FULL = {
    "loader": dict(bs=112, image_size=224, per_class=12, workers=8, **CUB),
    "train_step/resnet": dict(arch="resnet50_frozen_normalize", image_size=224, bs=112, embed_dim=128, amp="bf16",
                                channels_last=True, compile=True, steps=20, warmup=3),
    "train_step/vit": dict(arch="timm:vit_small_patch16_224_normalize", image_size=224, bs=112, embed_dim=384,
                               amp="bf16", channels_last=True, compile=True, steps=20, warmup=3),
    "criterion": dict(sizes=[112, 1024], dim=128),
    "diffusion": dict(sizes=[4096], dims=[128, 512]),
    "evaluation": dict(samples=60502, classes=11316, dim=128),  # SOP's test split
    "nccl": dict(arch="resnet18_frozen_normalize", image_size=64, global_batch=32, embed_dim=32, steps=3),
}
QUICK = {
    "loader": dict(bs=4, image_size=32, per_class=4, workers=0, classes=4, source_size=(64, 48)),
    "train_step/resnet": dict(arch="resnet18_frozen_normalize", image_size=32, bs=8, embed_dim=16, amp="bf16",
                                channels_last=True, compile=False, steps=2, warmup=1),
    "train_step/vit": dict(arch="timm:vit_tiny_patch16_224_normalize", image_size=32, bs=8, embed_dim=16,
                               amp="bf16", channels_last=True, compile=False, steps=2, warmup=1),
    "criterion": dict(sizes=[16], dim=16),
    "diffusion": dict(sizes=[32], dims=[16]),
    "evaluation": dict(samples=400, classes=50, dim=16),
    "nccl": dict(arch="resnet18_frozen_normalize", image_size=32, global_batch=16, embed_dim=8, steps=2),
}
# Seconds each section may take on the GPU; they add up to 450 (see the docstring). --quick's sizes
# take a few seconds; its limits only stop a run that hangs.
BUDGETS = {"loader": 35, "train_step/resnet": 140, "train_step/vit": 110, "criterion": 25, "diffusion": 35,
           "evaluation": 60, "nccl": 45}
QUICK_BUDGET = 120


class SectionStopped(Exception):
    """A section ran into its time guard."""


@contextlib.contextmanager
def time_guard(seconds):
    """Raise SectionStopped in the block after `seconds`. A signal can only be handled in the main
    thread; elsewhere the block runs unguarded."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signal_number, frame):
        raise SectionStopped(f"stopped by its time guard after {seconds:.3g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_sections(sections, budgets, time_limit):
    """{name: record} of each section(figures, budget) in order. A section fills `figures`
    ({name: number}) as it measures, so a section stopped by its guard or by an error keeps what
    it measured; it may return a status ("skipped: ...") instead of "done"."""
    start = time.perf_counter()
    records = {}
    for name, section in sections.items():
        budget = min(budgets[name], time_limit - (time.perf_counter() - start))
        figures, began = {}, time.perf_counter()
        if budget <= 0:
            records[name] = {"status": "skipped: no time left of --time_limit", "budget_s": 0, "figures": figures}
            continue
        print(f"{name} (limit {budget:.0f} s) ...", file=sys.stderr, flush=True)
        try:
            with time_guard(budget):
                status = section(figures, budget) or "done"
        except SectionStopped as stop:
            status = str(stop)
        except Exception as error:  # one failing section leaves the others' figures
            traceback.print_exc()
            status = f"failed: {type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"
        records[name] = {"status": status, "seconds": time.perf_counter() - began, "budget_s": budget,
                         "figures": figures}
    return records


def loader_section(sizes):
    def measure(figures, budget):
        rate, count = train_step.loader_throughput(sizes["bs"], sizes["image_size"], sizes["classes"],
                                                   sizes["per_class"], sizes["source_size"], sizes["workers"])
        figures["images read"] = count
        figures["images/s"] = rate
    return measure


def train_section(sizes, device):
    def measure(figures, budget):
        keys = ("arch", "image_size", "bs", "embed_dim", "amp", "channels_last", "compile", "steps", "warmup")
        times = train_step.step_times(device, **{key: sizes[key] for key in keys})
        for name in train_step.RUNS:
            figures[f"{name} step (ms)"] = times[name] * 1e3
            figures[f"{name} images/s"] = sizes["bs"] / times[name]
        figures["+OBD-SD / baseline"] = times["+OBD-SD"] / times["baseline"]
        figures["teacher forward alone (ms)"] = times["teacher forward"] * 1e3
        figures["OBD-SD target alone (ms)"] = times["OBD-SD target"] * 1e3
    return measure


def criterion_section(sizes, device):
    def measure(figures, budget):
        generator = torch.Generator().manual_seed(0)
        for size in sizes["sizes"]:
            loop_time, ours_time, difference = criterion_bench.compare(size, sizes["dim"], device, generator)
            figures[f"B={size} released design (ms)"] = loop_time * 1e3
            figures[f"B={size} this codebase (ms)"] = ours_time * 1e3
            figures[f"B={size} speed-up"] = loop_time / ours_time
            figures[f"B={size} loss difference"] = difference
    return measure


def diffusion_section(sizes, device):
    def measure(figures, budget):
        torch.manual_seed(0)
        for size in sizes["sizes"]:
            for dim in sizes["dims"]:
                for row in diffusion_bench.combination_rows(size, dim, device):
                    where = f"B={size} D={dim} {row['name']}"
                    figures[f"{where} (ms)"] = row["seconds"] * 1e3
                    figures[f"{where} speed-up over the dense inverse"] = row["dense_inverse_seconds"] / row["seconds"]
                    if row["deviation"] is not None:
                        figures[f"{where} max deviation"] = row["deviation"]
                figures[f"B={size} D={dim} dense inverse (ms)"] = row["dense_inverse_seconds"] * 1e3
    return measure


def evaluation_section(sizes, device):
    def measure(figures, budget):
        features, labels = evaluation_bench.synthetic_embeddings(sizes["samples"], sizes["classes"], sizes["dim"])

        def neighbours(rows, k):
            return evaluation.nearest_neighbours(rows, k, device=device)

        for title, names in (("all metrics", evaluation_bench.OURS_FULL),
                             ("precision@1 r_precision mAP@R", list(evaluation_bench.SHARED))):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            values = evaluation.compute(features, labels, names, neighbours=neighbours)
            figures[f"{title} (s)"] = time.perf_counter() - start
            if device.type == "cuda":
                figures[f"{title} peak GPU memory (GB)"] = torch.cuda.max_memory_allocated(device) / 1e9
            figures.update(values)
    return measure


EQUALITY_FLAGS = ["--n_epochs", "2", "--kd_lambda", "10", "--loss", "multisimilarity", "--PSD", "--OBDP"]


def equality_run(sizes, device, rank=0, world_size=1):
    """The loss of each of a few OBD-SD steps and the last step's gradients, on this rank's share of
    fixed global batches (all of them with one process). TF32 is off: it would round differently on
    a half batch than on the whole one."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    opt = parameters.parse([*EQUALITY_FLAGS, "--embed_dim", str(sizes["embed_dim"])])
    torch.manual_seed(0)
    model = architectures.select(sizes["arch"], sizes["embed_dim"], pretrained=False,
                                 image_size=sizes["image_size"]).to(device).train()
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    with torch.no_grad():  # a teacher that differs from the student
        for parameter in teacher.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    batch = sizes["global_batch"]
    criterion = build_criterion(opt, batch // 2).to(device)
    optimizer = torch.optim.SGD([*model.parameters(), *criterion.parameters()], lr=0.01)
    step = TrainingStep(model, teacher, criterion, optimizer)
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(batch // 2).repeat_interleave(2)
    share = slice(rank * batch // world_size, (rank + 1) * batch // world_size)
    losses = []
    for _ in range(sizes["steps"]):
        images = torch.randn(batch, 3, sizes["image_size"], sizes["image_size"], generator=generator)
        losses.append(step(images[share].to(device), labels[share].to(device), epoch=1).item())
    gradients = {name: p.grad.detach().cpu() for name, p in [*model.named_parameters(), *criterion.named_parameters()]
                 if p.grad is not None}
    return losses, gradients


def equality_worker(sizes, out):
    """One rank of the torchrun that nccl_section starts; rank 0 saves its losses and gradients."""
    context = distributed.setup()
    try:
        losses, gradients = equality_run(sizes, context.device, context.rank, context.world_size)
        if context.is_main:
            torch.save({"losses": losses, "gradients": gradients, "backend": torch.distributed.get_backend()}, out)
    finally:
        distributed.teardown()


def distributed_equality(sizes, quick, timeout):
    """{figure: number} comparing a 2-process torchrun (NCCL on GPUs, gloo on the CPU) with one
    process on the concatenated batches."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "rank0.pt")
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(distributed.free_port()), "-m", "benchmarks.gpu", "--equality_worker", out, *(["--quick"] * quick)]
        # Its own process group, so that a stop ends torchrun's workers too, not only torchrun.
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        try:
            output, _ = process.communicate(timeout=timeout)
        except BaseException as error:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            if isinstance(error, subprocess.TimeoutExpired):
                raise SectionStopped(f"stopped by its time guard after {timeout:.3g} s") from None
            raise
        if process.returncode != 0:
            raise RuntimeError(f"torchrun exited with {process.returncode}: {output.strip()[-2000:]}")
        shared = torch.load(out)
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    losses, gradients = equality_run(sizes, device)
    largest_gradient = max(gradient.abs().max().item() for gradient in gradients.values())
    gradient_difference = max((shared["gradients"][name] - gradient).abs().max().item()
                              for name, gradient in gradients.items())
    equal = shared["gradients"].keys() == gradients.keys() and all(
        torch.allclose(shared["gradients"][name], gradient, atol=1e-5, rtol=1e-4)
        for name, gradient in gradients.items())
    return {"backend": shared["backend"], "steps": len(losses),
            "max loss difference": max(abs(a - b) for a, b in zip(shared["losses"], losses)),
            "max gradient difference / largest gradient": gradient_difference / largest_gradient,
            "equal within atol 1e-5, rtol 1e-4": equal}


def nccl_section(sizes, quick):
    def measure(figures, budget):
        if quick:
            return "skipped: --quick runs on the CPU"
        count = torch.cuda.device_count()
        if count < 2:
            return "skipped: one GPU" if count == 1 else f"skipped: {count} GPUs"
        result = distributed_equality(sizes, quick, timeout=max(1.0, budget - 2))
        figures.update({key: value for key, value in result.items() if isinstance(value, (int, float))
                        and not isinstance(value, bool)})
        return f"done: {result['backend']}, " + ("equal" if result["equal within atol 1e-5, rtol 1e-4"]
                                                  else "NOT equal within atol 1e-5, rtol 1e-4")
    return measure


def sections(sizes, device, quick):
    return {
        "loader": loader_section(sizes["loader"]),
        "train_step/resnet": train_section(sizes["train_step/resnet"], device),
        "train_step/vit": train_section(sizes["train_step/vit"], device),
        "criterion": criterion_section(sizes["criterion"], device),
        "diffusion": diffusion_section(sizes["diffusion"], device),
        "evaluation": evaluation_section(sizes["evaluation"], device),
        "nccl": nccl_section(sizes["nccl"], quick),
    }


def table(report):
    """Markdown: one row a figure, the section's name and status on its first row."""
    lines = [f"{report['device']}, torch {report['torch']}, {report['weights']}", "",
             "| section | status | figure | value |", "|---|---|---|---:|"]
    for name, record in report["sections"].items():
        title = f"{name} ({record['sizes']['arch']})" if "arch" in record["sizes"] else name
        rows = list(record["figures"].items()) or [("", "")]
        for index, (figure, value) in enumerate(rows):
            if isinstance(value, float):
                value = f"{value:.3g}" if abs(value) < 1e-2 else f"{value:,.2f}"
            first = index == 0
            lines.append(f"| {title if first else ''} | {record['status'] if first else ''} | {figure} | {value} |")
    return "\n".join(lines)


def measure(args):
    if args.equality_worker:
        return equality_worker((QUICK if args.quick else FULL)["nccl"], args.equality_worker)
    if not args.quick and not torch.cuda.is_available():
        raise UserError("no CUDA GPU; use --quick for the CPU check")
    device = torch.device("cpu" if args.quick else "cuda")
    sizes = QUICK if args.quick else FULL
    budgets = {name: QUICK_BUDGET for name in BUDGETS} if args.quick else BUDGETS
    started = time.perf_counter()
    records = run_sections(sections(sizes, device, args.quick), budgets, args.time_limit)
    report = {
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"),
        "gpus": torch.cuda.device_count(), "quick": args.quick, "torch": torch.__version__,
        "cuda": torch.version.cuda, "weights": WEIGHTS, "time_limit_s": args.time_limit,
        "seconds": time.perf_counter() - started,
        "sections": {name: {**record, "sizes": sizes[name]} for name, record in records.items()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    text = table(report)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    print(f"\n{report['seconds']:.0f} s in all; written to {out} and {out.with_suffix('.md')}")
    failed = [name for name, record in records.items() if record["status"].startswith("failed")]
    if failed:
        print(f"failed: {', '.join(failed)} (tracebacks above)", file=sys.stderr)
        sys.exit(1)


def main(argv=None):
    parser = CommandParser(command="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes on the CPU, to check the script end to end")
    parser.add_argument("--out", default="Training_Results/bench_gpu.json",
                        help="the JSON; the table goes next to it, as .md")
    parser.add_argument("--time_limit", type=float, default=480.0,
                        help="seconds for all sections; each also has its own limit")
    parser.add_argument("--equality_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return run_command(measure, args)


if __name__ == "__main__":
    main()
