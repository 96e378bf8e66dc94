"""Time of one step of OBDP over a cross-batch memory's graph (criteria/memory.py: the batch
pushed into the memory's kNN lists, then the target diffused over the memory's graph) at B = 112
and memory sizes M, against the batch-only OBDP target on the same batch, measured in the same run.
The time per memory entry shows whether the cost grows linearly in M.

    python -m benchmarks.memory_diffusion [--sizes 4096 16384 65536] [--dims 128 512] [--device cpu|cuda]
"""
import torch
from torch.nn import functional as F

import diffusion
from benchmarks import available_device
from benchmarks.diffusion import timed
from criteria import CrossBatchMemory
from errors import CommandParser

B, K, KD_TAU = 112, 10, 1.0
SETTINGS = diffusion.Settings(w=0.5, k=K, solver="iterative", options={"tau": 1.0})  # SOP's w


def filled_memory(size, dim, device, generator):
    """A memory whose teacher part holds `size` entries, filled in large pushes (the lists are exact
    whatever the push size)."""
    memory = CrossBatchMemory(size, dim, teacher=True, k=K).to(device)
    for start in range(0, size, 4096):
        count = min(4096, size - start)
        teacher = F.normalize(torch.randn(count, dim, generator=generator), dim=1).to(device)
        memory.push(teacher, torch.zeros(count, dtype=torch.long, device=device),
                    torch.arange(start, start + count, device=device), teacher)
    return memory


def memory_step(memory, teacher, labels, images):
    slots = memory.push(teacher, labels, images, teacher)
    nodes = memory.teacher_nodes()
    position = torch.empty(memory.size, dtype=torch.long, device=nodes.device)
    position[nodes] = torch.arange(len(nodes), device=nodes.device)
    return diffusion.memory_soft_targets(memory.teacher_embeddings[nodes], position[slots], KD_TAU, SETTINGS,
                                         memory.teacher_edges())


def main(argv=None):
    parser = CommandParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=torch.device("cpu"), type=available_device)
    args = parser.parse_args(argv)
    device = args.device
    print(f"B = {B}, kNN k = {K}, w = {SETTINGS.w}, iterative solver; device {device}, "
          f"torch threads={torch.get_num_threads()}; median of {args.repeats} steps after one warm-up")
    print(f"{'D':>4} {'M':>7} {'batch-only ms':>14} {'memory step ms':>15} {'ratio':>7} {'us per entry':>13} "
          f"{'memory state MB':>16}")
    for dim in args.dims:
        for size in args.sizes:
            generator = torch.Generator().manual_seed(0)
            memory = filled_memory(size, dim, device, generator)
            teacher = F.normalize(torch.randn(B, dim, generator=generator), dim=1).to(device)
            labels = torch.zeros(B, dtype=torch.long, device=device)
            images = torch.arange(size, size + B, device=device)
            batch_only, _ = timed(lambda: diffusion.soft_targets(teacher, KD_TAU, SETTINGS), args.repeats, device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            step, target = timed(lambda: memory_step(memory, teacher, labels, images), args.repeats, device)
            assert torch.allclose(target.sum(dim=1), torch.ones(B, device=device), atol=1e-4)
            state = sum(buffer.numel() * buffer.element_size() for buffer in memory.buffers()) / 2 ** 20
            print(f"{dim:>4} {size:>7} {batch_only * 1e3:>14.2f} {step * 1e3:>15.2f} {step / batch_only:>6.1f}x "
                  f"{step / size * 1e6:>13.3f} {state:>16.1f}"
                  + (f"  peak GPU {torch.cuda.max_memory_allocated() / 2 ** 30:.2f} GB" if device.type == "cuda"
                     else ""), flush=True)


if __name__ == "__main__":
    main()
