"""Speed measurements against baselines timed in the same run (see README, Benchmarks)."""
import argparse

import torch


def available_device(name):
    """The --device of a benchmark, as an argparse type: a device this machine has."""
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{name!r} is not a device; use cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{name}: this machine has no CUDA GPU; use --device cpu")
    return chosen
