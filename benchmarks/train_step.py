"""Training-step time and images per second of the baseline, +PSD and +OBD-SD (teacher forward
included) on one device, measured in the same run, with the OBD-SD / baseline ratio and where the
difference goes (the teacher's forward, the soft target); then the dataloader's throughput on its
own, on generated JPEGs decoded and augmented as in training.

    python -m benchmarks.train_step                     # CPU: resnet18 at 64 px, bs 112
    python -m benchmarks.train_step --device cuda --arch resnet50_frozen_normalize --image_size 224 [--amp bf16]
"""
import copy
import functools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import architectures
import datasampler
import datasets
import diffusion
import parameters
from benchmarks import available_device
from datasampler.seeded import SeededBatches, SeededSamples
from errors import CommandParser
from training.run import build_criterion
from training.step import AMP_DTYPES, TrainingStep

RUNS = {"baseline": [], "+PSD": ["--PSD"], "+OBD-SD": ["--PSD", "--OBDP"]}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(functions, steps, warmup, device):
    """Median time of each function, timed in rounds that call each once, so that drift in the
    machine's speed hits them all alike."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    times = {name: [] for name in functions}
    for _ in range(steps):
        for name, function in functions.items():
            synchronize(device)
            start = time.perf_counter()
            function()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def step_times(device, arch, image_size, bs, embed_dim, amp=None, channels_last=False, compile=False, steps=15,
               warmup=3):
    """Median step time of each run, plus the teacher forward and the OBD-SD target on their own.

    One student and one teacher serve the three runs, each with its own criterion and optimizer:
    the runs differ only in the criterion, and with `compile` each network is compiled once, not
    once a run (a ResNet50's compilation takes about a minute)."""
    images = torch.randn(bs, 3, image_size, image_size, device=device)
    labels = torch.arange(bs // 2, device=device).repeat_interleave(2)
    torch.manual_seed(0)
    model = architectures.select(arch, embed_dim, pretrained=False, image_size=image_size).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    functions = {}
    for name, flags in RUNS.items():
        opt = parameters.parse(["--n_epochs", "2", "--embed_dim", str(embed_dim), *flags])
        criterion = build_criterion(opt, bs // 2).to(device)
        optimizer = torch.optim.Adam([*model.parameters(), *criterion.parameters()], lr=1e-5)
        step = TrainingStep(model, teacher, criterion, optimizer, amp=amp, channels_last=channels_last,
                            compile=compile)
        functions[name] = functools.partial(step, images, labels, epoch=1)
    with torch.no_grad():
        teacher_batch = step.embed(step.teacher_forward, images)
    functions["teacher forward"] = torch.no_grad()(functools.partial(step.embed, step.teacher_forward, images))
    functions["OBD-SD target"] = functools.partial(diffusion.soft_targets, teacher_batch, 1.0, diffusion.Settings())
    return interleaved_medians(functions, steps, warmup, device)


def write_jpegs(root, classes, per_class, size):
    """`per_class` JPEGs of random pixels in each of `classes` folders; `size`: a side, or (width, height).
    Random pixels compress worse than photographs: the files are larger and slower to decode."""
    width, height = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = Path(root) / "images" / f"class_{label:03d}"
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.jpg", quality=90)


def loader_throughput(bs, image_size, classes, per_class, source_size, workers):
    """Images per second of the training loader (decode, augmentation, collation) over one epoch,
    and the number of images; the folder dataset trains on the first half of the `classes`."""
    with tempfile.TemporaryDirectory() as root:
        write_jpegs(root, classes=classes, per_class=per_class, size=source_size)
        train = datasets.select("folder", root, crop_size=image_size,
                                resize_size=round(image_size * 256 / 224))["train"]
        sampler = SeededBatches(datasampler.select("class_random", train.labels, bs, 2, 0))
        loader = torch.utils.data.DataLoader(SeededSamples(train), batch_sampler=sampler,
                                             num_workers=workers, persistent_workers=False)
        start, count = time.perf_counter(), 0
        for images, _ in loader:
            count += len(images)
        return count / (time.perf_counter() - start), count


def main(argv=None):
    parser = CommandParser(command="python -m benchmarks.train_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", type=available_device, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default=None, help="default: resnet18_frozen_normalize on CPU, "
                                                     "resnet50_frozen_normalize on CUDA")
    parser.add_argument("--image_size", type=int, default=None, help="default: 64 on CPU, 224 on CUDA")
    parser.add_argument("--bs", type=int, default=112)
    parser.add_argument("--embed_dim", type=int, default=128)
    parser.add_argument("--amp", default=None, choices=list(AMP_DTYPES))
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--steps", type=int, default=None, help="timed rounds (default: 15 on CPU, 30 on CUDA)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--kernels", type=int, default=2, help="dataloader workers")
    parser.add_argument("--source_size", type=int, default=256, help="side of the generated JPEGs")
    parser.add_argument("--loader_images_per_class", type=int, default=10)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.arch = args.arch or ("resnet50_frozen_normalize" if cuda else "resnet18_frozen_normalize")
    args.image_size = args.image_size or (224 if cuda else 64)
    args.steps = args.steps or (30 if cuda else 15)
    print(f"{args.arch} at {args.image_size} px, bs {args.bs}, embed {args.embed_dim}, amp {args.amp or 'fp32'}, "
          f"channels_last {args.channels_last}, compile {args.compile}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if cuda else f", torch threads {torch.get_num_threads()}")
          + f"; medians of {args.steps} interleaved rounds")
    times = step_times(device, args.arch, args.image_size, args.bs, args.embed_dim, args.amp, args.channels_last,
                       args.compile, args.steps, args.warmup)
    print("| run | step (ms) | images/s | vs baseline |")
    print("|---|---:|---:|---:|")
    for name in RUNS:
        print(f"| {name} | {times[name] * 1e3:.1f} | {args.bs / times[name]:.0f} | "
              f"{times[name] / times['baseline']:.2f}x |")
    for name in ("teacher forward", "OBD-SD target"):
        print(f"| {name} alone | {times[name] * 1e3:.1f} | | {times[name] / times['baseline']:.2f}x |")
    extra = times["+OBD-SD"] - times["baseline"]
    print(f"\nOBD-SD / baseline step time: {times['+OBD-SD'] / times['baseline']:.2f}; of the extra "
          f"{extra * 1e3:.1f} ms, the teacher forward is {times['teacher forward'] * 1e3:.1f} ms and the "
          f"target {times['OBD-SD target'] * 1e3:.1f} ms")
    # bs / 2 training classes of 2 per batch
    rate, count = loader_throughput(args.bs, args.image_size, classes=2 * (args.bs // 2),
                                    per_class=args.loader_images_per_class, source_size=args.source_size,
                                    workers=args.kernels)
    print(f"dataloader alone ({args.kernels} workers, {args.source_size} px JPEGs -> {args.image_size} px crops, "
          f"{count} images): {rate:.0f} images/s")


if __name__ == "__main__":
    main()
