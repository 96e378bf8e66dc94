"""What a run shows as it goes: the console table of its evaluations and, with Weights & Biases
on, the same metrics, its training losses, its report images and its best values online.
W&B stays optional: it is imported only when used, works offline (WANDB_MODE=offline), and its
key comes from the environment (WANDB_API_KEY) only. With TensorBoard on (--log_tensorboard) the
same scalars, the epoch as their step, and the report images go to event files in the run
folder's tensorboard/ (`tensorboard --logdir RUN/tensorboard`)."""
import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from errors import SettingError


@dataclass(frozen=True)
class LogSettings:
    """What a run shows and writes besides its tables: a progress line every `progress_every` seconds
    without a terminal (0: every step), Weights & Biases (`log_online`, in `project` and `group`),
    TensorBoard event files, and the PNG reports at its end (unless `no_reports`)."""
    progress_every: float = 60.0
    log_online: bool = False
    log_tensorboard: bool = False
    project: str = "OBD-SD"
    group: str = ""
    no_reports: bool = False

    def __post_init__(self):
        if self.progress_every < 0:
            raise SettingError(f"progress_every must be 0 (every step) or more seconds, got {self.progress_every}",
                               ["progress_every"])


class RunLog:
    def __init__(self, enabled=True):
        self.enabled = enabled  # under torchrun only rank 0 shows anything
        self.header_printed = False
        self.wandb = None
        self.tensorboard = None

    def start_online(self, project, group, run_id, name, config, folder):
        """Join (or, with run_id, continue) a W&B run; returns its id, for a resumed run to continue it."""
        if not self.enabled:
            return run_id
        import wandb

        self.wandb = wandb.init(project=project, group=group or None, id=run_id, resume="allow", name=name,
                                config=config, dir=folder)
        return self.wandb.id

    def start_tensorboard(self, folder, purge_step=None):
        """Write event files to folder/tensorboard. A resumed run passes purge_step (the first epoch
        it logs): TensorBoard hides what an interrupted run had logged from there on, which the
        resumed run logs again."""
        if not self.enabled:
            return
        from torch.utils.tensorboard import SummaryWriter  # the tensorboard package, only when asked for

        self.tensorboard = SummaryWriter(os.path.join(folder, "tensorboard"), purge_step=purge_step)

    def evaluation(self, row):
        """One console line for an evaluation row (epoch, split, metrics, best_for), re-ranked metrics
        included; '*' marks a row that set a new best."""
        if not self.enabled:
            return
        names = [name for name in row if name not in ("epoch", "split", "protocol", "best_for")]
        widths = [max(10, len(name)) for name in names]
        if not self.header_printed:
            tqdm.write("  ".join([f"{'epoch':>10}", f"{'split':>10}"]
                                 + [f"{name:>{width}}" for name, width in zip(names, widths)]))
            self.header_printed = True
        cells = [f"{row['epoch']:>10}", f"{row['split']:>10}"]
        cells += [f"{row[name]:>{width}.4f}" for name, width in zip(names, widths)]
        tqdm.write("  ".join(cells) + ("  *" if row["best_for"] else ""))
        self.online({f"{row['split']}/{name}": row[name] for name in names}, row["epoch"])

    def online(self, values, epoch):
        if self.wandb is not None:
            self.wandb.log({**values, "epoch": epoch})
        if self.tensorboard is not None:
            for name, value in values.items():
                self.tensorboard.add_scalar(name, value, epoch)
            self.tensorboard.flush()  # an interrupted run keeps what it logged

    def images(self, paths, epoch=None):
        """Report PNGs ({name: path}) as W&B images, and TensorBoard images at step `epoch`."""
        if self.wandb is not None and paths:
            import wandb

            self.wandb.log({f"reports/{name}": wandb.Image(path) for name, path in paths.items()})
        if self.tensorboard is not None and paths:
            from PIL import Image

            for name, path in paths.items():
                with Image.open(path) as image:
                    self.tensorboard.add_image(f"reports/{name}", np.asarray(image.convert("RGB")), epoch,
                                               dataformats="HWC")
            self.tensorboard.flush()

    def finish(self, best):
        if self.wandb is not None:
            self.wandb.summary.update({f"best/{name}": record["value"] for name, record in best.items()})
            self.wandb.finish()
        if self.tensorboard is not None:
            self.tensorboard.close()


def tensorboard_available():
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def online_logging_possible():
    """Whether W&B can log: a key in the environment, or offline / disabled mode."""
    return os.environ.get("WANDB_MODE") in ("offline", "disabled") or bool(os.environ.get("WANDB_API_KEY"))
