"""Data-parallel training under torchrun: the process group, each rank's share of the global
batch, and the gather that makes the loss, the PSD term and the diffusion see the global batch.

    torchrun --nproc_per_node 4 main.py ...   (NCCL on GPUs, gloo on CPU)

Every rank draws the same global batch (same sampler, same seed) and embeds its own contiguous
slice of it. The slices are gathered in rank order, so every rank computes the loss of exactly the
batch a single process would see. The gather's backward sums each slice's gradient over the ranks
and the parameters' gradients are then averaged over the ranks: one step equals the single-process
step on the concatenated batch. Without torchrun (no WORLD_SIZE), everything here is a no-op.
"""
import datetime
import os
import socket
from typing import NamedTuple

import torch
import torch.distributed as dist

import checkpoints
from errors import UserError


class Context(NamedTuple):
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self):
        return self.rank == 0


def setup(gpus=None):
    """The Context of this process; joins the process group when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context(0, 1, select_device(gpus))
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"torchrun started {os.environ.get('LOCAL_WORLD_SIZE', local_rank + 1)} processes on a "
                            f"machine with {torch.cuda.device_count()} GPU(s); lower --nproc_per_node")
        device = torch.device(f"cuda:{local_rank}")
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        # The other ranks wait while rank 0 evaluates: allow an SOP-sized evaluation, not just the default 10 min.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=1))
    return Context(dist.get_rank(), dist.get_world_size(), device)


def cpu_threads(requested=None):
    """How many threads torch computes with on the CPU: `requested` when given (above 0), else
    OMP_NUM_THREADS when set, else the cores this process may run on (os.sched_getaffinity: a
    container's or taskset's share, not the machine's), divided among the processes torchrun
    started on this machine. More threads than free cores costs far more than it gains: the
    MS + PSD + OBDP loss at B = 112 took 220 ms instead of 3 ms with 2 threads on 2 busy cores."""
    if requested:
        return int(requested)
    try:
        told = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        told = 0
    if told > 0:
        return told
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))


def use_cpu_threads(requested=None):
    """Set torch's CPU thread count to cpu_threads(requested); returns it."""
    threads = cpu_threads(requested)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def environment(threads):
    """The facts of this machine that change a run's numbers but are not its settings: torch's
    version, the CPU kernels it dispatches to (oneDNN picks by instruction set), the thread count,
    the device. Two runs agree bit for bit only where these agree too."""
    record = {"torch": str(torch.__version__), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "threads": threads}
    # the variables that change which CPU kernels run (get_cpu_capability does not see oneDNN's limit)
    record |= {name: os.environ[name] for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
               if os.environ.get(name)}
    if torch.cuda.is_available():
        record |= {"cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name()}
    return record


def select_device(gpus):
    if not torch.cuda.is_available():
        if gpus is not None:
            raise UserError(f"--gpu {gpus[0]} was asked for but this machine has no CUDA GPU; "
                            "drop --gpu to train on the CPU")
        return torch.device("cpu")
    if gpus is None:
        return torch.device("cuda:0")
    if gpus[0] >= torch.cuda.device_count():
        raise UserError(f"--gpu {gpus[0]} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device(f"cuda:{gpus[0]}")


def active():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def teardown():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class RankShare:
    """Wraps a batch sampler: yields this rank's contiguous slice of each global batch. With a
    class-balanced sampler and a slice size that is a multiple of samples_per_class, every rank
    gets whole classes."""

    def __init__(self, sampler, rank, world_size):
        self.sampler, self.rank, self.world_size = sampler, rank, world_size

    def set_epoch(self, epoch):
        self.sampler.set_epoch(epoch)

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        for batch in self.sampler:
            share = len(batch) // self.world_size
            yield batch[self.rank * share:(self.rank + 1) * share]


def check_batch_split(batch_size, samples_per_class, world_size, class_balanced):
    if world_size == 1:
        return
    unit = world_size * samples_per_class if class_balanced else world_size
    if batch_size % unit:
        raise UserError(f"batch_size {batch_size} cannot be shared by {world_size} processes"
                        + (f" with whole classes of {samples_per_class} samples" if class_balanced else "")
                        + f"; use a multiple of {unit}")


def _all_gather(tensor):
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor):
        ctx.share = len(tensor)
        return _all_gather(tensor)

    @staticmethod
    def backward(ctx, gradient):
        gradient = gradient.contiguous()
        dist.all_reduce(gradient)  # every rank's loss reaches every slice
        return gradient.narrow(0, dist.get_rank() * ctx.share, ctx.share)


def gather(tensor):
    """The global batch: every rank's slice, concatenated in rank order; differentiable."""
    if not active():
        return tensor
    return _Gather.apply(tensor) if tensor.requires_grad else _all_gather(tensor)


def average_gradients(parameters):
    """Average the gradients over the ranks, in one flat bucket per dtype."""
    if not active():
        return
    gradients = [p.grad for p in parameters if p.grad is not None]
    for dtype in {g.dtype for g in gradients}:
        group = [g for g in gradients if g.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        for gradient, averaged in zip(group, flat.split([g.numel() for g in group])):
            gradient.copy_(averaged.view_as(gradient))


def broadcast_parameters(modules):
    """Rank 0's parameters and buffers on every rank."""
    if not active():
        return
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, 0)


def broadcast_object(value):
    """Rank 0's `value` on every rank."""
    if not active():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, 0)
    return holder[0]


def sync_random_state():
    """Rank 0's random generators on every rank, so random mining picks the same pairs everywhere."""
    if active():
        checkpoints.restore_rng(broadcast_object(checkpoints.rng_state()))


def barrier():
    if active():
        dist.barrier()


def free_port():
    """A TCP port free on this machine now, for a torchrun rendezvous (--master_port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
