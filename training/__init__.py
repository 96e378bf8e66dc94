"""A training run as one library call, and its parts:

    from training import RunSettings
    from training.run import run
    result = run(RunSettings(...), callbacks=[stop_when_poor])   # -> RunResult

settings.py (RunSettings and the record of config.json), run.py (the Run: set up, resume, one
epoch, finish), step.py (one optimisation step, an epoch's batches), optimisation.py (optimisers and
learning-rate schedules by name), folder.py (the run folder, its tables and checkpoints) and log.py
(the console table, W&B and TensorBoard).
"""
from training.settings import OPERATIONAL, RunSettings, TrainingSettings, differences, from_record, to_record

__all__ = ["OPERATIONAL", "RunSettings", "TrainingSettings", "differences", "from_record", "to_record"]
