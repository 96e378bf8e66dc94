"""Train a deep metric learning model, optionally with PSD / OBD-SD.

    python main.py --dataset cub200 --source /data/cub200 --PSD --OBDP
    torchrun --nproc_per_node N main.py ...   data-parallel on the global batch (distributed.py)

The method (Zeng, Yang, Liu, Satoh, "Improving deep metric learning via self-distillation and
online batch diffusion process", Visual Intelligence 2024) is written out in docs/method.md. This
file parses the flags into the run's settings (parameters.py) and runs it (training.run, the one
library call a training is; docs/architecture.md shows the layers below it). Nothing imports it.
"""
import os
import shlex

import parameters
from errors import Interrupted, SettingError, UserError, run_command
from training.run import RunInterrupted, TrainingFailed, run


def train(settings):
    """The run of `settings`, its library errors worded for the command line; returns its folder."""
    try:
        return run(settings).folder
    except SettingError as error:
        raise UserError(parameters.flags_named(error)) from None
    except TrainingFailed as error:
        raise UserError(f"{error}; lower --lr or --kd_lambda, or pass --skip_nonfinite to skip such batches") \
            from None
    except RunInterrupted as error:
        how = "" if not error.resumable else \
            f"; continue with: python main.py --config {shlex.quote(os.path.join(error.folder, 'config.json'))} " \
            f"--resume {shlex.quote(error.folder)}"
        raise Interrupted(error.signal_number, f"{error}{how}") from None


def main(argv=None):
    run_command(train, parameters.parse(argv))


if __name__ == "__main__":
    main()
