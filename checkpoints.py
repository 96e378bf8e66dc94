"""Checkpoint files: written atomically, read safely (weights_only=True), with one-line errors.

A checkpoint is a dict of tensors and plain values: "network" (the state dict), "arch",
"embed_dim", "epoch", "config" (the run's flags), and in checkpoint_last.pth everything a
resumed run needs ("optimizer", "scheduler", "criterion", "rng", "best", "skipped_batches").
"""
import contextlib
import os
import random

import numpy as np
import torch

from errors import UserError, first_line, signals_deferred


def save(checkpoint, path):
    """torch.save into a temporary file, flushed and renamed: a crash, an interruption or a full
    disk leaves the old file intact and no temporary file behind."""
    _replace(path, lambda handle: torch.save(checkpoint, handle))


def write_atomically(path, content: bytes):
    """`content` as the file at `path`, written as `save` writes a checkpoint."""
    _replace(path, lambda handle: handle.write(content))


def _replace(path, write):
    temporary = f"{path}.tmp"
    try:
        with signals_deferred(), open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        if isinstance(error, OSError):
            raise write_error(path, error) from None
        raise


def write_error(path, error):
    """The UserError of a file of the run that could not be written (a full disk, a lost mount)."""
    kept = "the previous version is kept" if os.path.exists(path) else "nothing was written"
    return UserError(f"cannot write {path} ({error.strerror or error}); {kept}; free space or fix the folder, "
                     "then continue with --resume")


def read(path):
    """The dict stored at `path` (a checkpoint, or a bare state dict, unwrapped from "state_dict"),
    read with weights_only=True, or a UserError saying why it cannot be read."""
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  a file of any content: torch's loader fails in many ways
        # Only the first line: torch's own advice (weights_only=False) is unsafe for files of unknown origin.
        raise UserError(f"{path} is not a readable checkpoint (truncated or another format: "
                        f"{first_line(error, 120)})") from None
    if not isinstance(content, dict) or not content:
        raise UserError(f"{path} holds a {type(content).__name__}, not a checkpoint or a state dict")
    if isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    return content


def load(path):
    """A checkpoint written by this codebase (with its "network" entry)."""
    checkpoint = read(path)
    if not isinstance(checkpoint.get("network"), dict):
        raise UserError(f"{path} is not a checkpoint of this codebase (no 'network' entry)")
    return checkpoint


def rng_state():
    """Every random generator of the main process, in types weights_only loading accepts."""
    numpy_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state):
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
