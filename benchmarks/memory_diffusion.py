"""Time of one step of OBDP over a cross-batch memory's graph (criteria/memory.py: a new batch pushed
into a full memory, its kNN lists kept exact, then the target diffused over the memory's graph) at
B = 112 and memory sizes M, against the batch-only OBDP target on the same batch, measured in the
same run. The time per memory entry shows whether the cost grows linearly in M. `--against REV`
also times the memory of git revision REV (criteria/memory.py as it was there) on the same batches,
and prints each step's ratio to it. "refilled": the lists refilled from the whole memory a step
(their cost is that of as many batch entries); `--turnover` first pushes M entries a batch at a
time, so that the timed steps meet lists that lived through evictions, as in a long run (slow for
a large M).

    python -m benchmarks.memory_diffusion [--sizes 4096 16384 65536] [--dims 128 512] [--against REV]
                                          [--turnover] [--device cpu|cuda]
"""
import inspect
import os
import subprocess
import types

import torch
from torch.nn import functional as F

import diffusion
from benchmarks import available_device
from benchmarks.diffusion import timed
from criteria import CrossBatchMemory
from errors import CommandParser, UserError, run_command

B, K, KD_TAU = 112, 10, 1.0
SETTINGS = diffusion.Settings(w=0.5, k=K, solver="iterative", options={"tau": 1.0})  # SOP's w
FILL = 4096  # entries pushed at once to fill the memory
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def memory_at(revision):
    """The CrossBatchMemory class of criteria/memory.py at git `revision`."""
    shown = subprocess.run(["git", "show", f"{revision}:criteria/memory.py"], cwd=REPOSITORY, capture_output=True,
                           text=True)
    if shown.returncode != 0:
        raise UserError(f"--against {revision}: {shown.stderr.strip() or 'git show failed'}; give a revision of "
                        "this repository that has criteria/memory.py")
    module = types.ModuleType(f"memory_at_{revision}")
    exec(compile(shown.stdout, f"{revision}:criteria/memory.py", "exec"), module.__dict__)  # noqa: S102  our own file
    return module.CrossBatchMemory


def push(memory, teacher, first_image):
    """Push a batch (its teacher embeddings also as the student's); an earlier memory also took the
    images' indices."""
    labels = torch.zeros(len(teacher), dtype=torch.long, device=teacher.device)
    if "images" in inspect.signature(memory.push).parameters:
        images = torch.arange(first_image, first_image + len(teacher), device=teacher.device)
        return memory.push(teacher, labels, images, teacher)
    return memory.push(teacher, labels, teacher_batch=teacher)


def unit_rows(count, dim, generator, device):
    return F.normalize(torch.randn(count, dim, generator=generator), dim=1).to(device)


def filled_memory(memory_class, size, dim, device):
    """A memory whose teacher part holds `size` entries, filled in large pushes (the lists are exact
    whatever the push size)."""
    memory = memory_class(size, dim, teacher=True, k=K).to(device)
    generator = torch.Generator().manual_seed(0)
    for start in range(0, size, FILL):
        push(memory, unit_rows(min(FILL, size - start), dim, generator, device), start)
    return memory


class Steps:
    """One memory step a call, each with a new batch; two Steps of the same size and dimension push
    the same batches."""

    def __init__(self, memory, dim, device):
        self.memory, self.dim, self.device = memory, dim, device
        self.generator = torch.Generator().manual_seed(1)
        self.pushed = memory.size
        self.refilled = []

    def __call__(self):
        teacher = unit_rows(B, self.dim, self.generator, self.device)
        slots = push(self.memory, teacher, self.pushed)
        self.pushed += B
        self.refilled.append(getattr(self.memory, "refilled", 0))
        nodes = self.memory.teacher_nodes()
        position = torch.empty(self.memory.size, dtype=torch.long, device=nodes.device)
        position[nodes] = torch.arange(len(nodes), device=nodes.device)
        return diffusion.memory_soft_targets(self.memory.teacher_embeddings[nodes], position[slots], KD_TAU,
                                             SETTINGS, self.memory.teacher_edges())


def turn_over(steps, wanted):
    """With `wanted`, push a memory's worth of batches before the timed steps."""
    if wanted:
        for _ in range(steps.memory.size // B):
            steps()
        steps.refilled.clear()


def state_megabytes(memory):
    return sum(buffer.numel() * buffer.element_size() for buffer in memory.buffers()) / 2 ** 20


def run(args):
    device = args.device
    earlier = memory_at(args.against) if args.against else None
    print(f"B = {B}, kNN k = {K}, w = {SETTINGS.w}, iterative solver; device {device}, "
          f"torch threads={torch.get_num_threads()}; median of {args.repeats} steps after one warm-up, each step "
          "a new batch into a full memory")
    against = f" {args.against + ' ms':>14} {'ratio':>7}" if earlier else ""
    print(f"{'D':>4} {'M':>7} {'batch-only ms':>14} {'memory step ms':>15} {'x batch':>8}{against} "
          f"{'us per entry':>13} {'refilled':>9} {'state MB':>9}")
    for dim in args.dims:
        for size in args.sizes:
            teacher = unit_rows(B, dim, torch.Generator().manual_seed(2), device)
            batch_only, _ = timed(lambda: diffusion.soft_targets(teacher, KD_TAU, SETTINGS), args.repeats, device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            steps = Steps(filled_memory(CrossBatchMemory, size, dim, device), dim, device)
            turn_over(steps, args.turnover)
            step, target = timed(steps, args.repeats, device)
            assert torch.allclose(target.sum(dim=1), torch.ones(B, device=device), atol=1e-4)
            compared = ""
            if earlier:
                earlier_steps = Steps(filled_memory(earlier, size, dim, device), dim, device)
                turn_over(earlier_steps, args.turnover)
                earlier_step, _ = timed(earlier_steps, args.repeats, device)
                compared = f" {earlier_step * 1e3:>14.2f} {step / earlier_step:>6.2f}x"
            print(f"{dim:>4} {size:>7} {batch_only * 1e3:>14.2f} {step * 1e3:>15.2f} {step / batch_only:>7.0f}x"
                  f"{compared} {step / size * 1e6:>13.3f} {sum(steps.refilled) / len(steps.refilled):>9.1f} "
                  f"{state_megabytes(steps.memory):>9.1f}"
                  + (f"  peak GPU {torch.cuda.max_memory_allocated() / 2 ** 30:.2f} GB" if device.type == "cuda"
                     else ""), flush=True)


def main(argv=None):
    parser = CommandParser(description=__doc__.split("\n\n")[0], command="python -m benchmarks.memory_diffusion")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--against", default=None, metavar="REV",
                        help="also time criteria/memory.py of this git revision on the same batches")
    parser.add_argument("--turnover", action="store_true",
                        help="push M entries a batch at a time before timing (lists that lived through evictions)")
    parser.add_argument("--device", default=torch.device("cpu"), type=available_device)
    run_command(run, parser.parse_args(argv))


if __name__ == "__main__":
    main()
