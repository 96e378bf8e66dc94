"""A run's folder and what it keeps: config.json, the tables metrics.csv (one row per
evaluation) and training.csv (one row per epoch), checkpoint_last.pth (all a resumed run needs),
the best checkpoints, summary.json, and run.lock.

    with RunFolder.create(save_path, name) as run:             # a new folder, locked
    with RunFolder.resume(save_path, folder=RUN) as run:       # an existing run, locked

Every file is written whole or not at all (checkpoints.write_atomically), and so is a table
row; one process at a time holds a folder (RunLock). Under torchrun only rank 0 writes: the
other ranks hold a RunFolder that only reads (`RunFolder.reader`).
"""
import contextlib
import csv
import errno
import fcntl
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import architectures
import checkpoints
from errors import SettingError, UserError

LAST_CHECKPOINT = "checkpoint_last.pth"
TABLES = ("metrics.csv", "training.csv")
CHECKPOINT_POLICIES = ("last_and_best", "last", "best", "none")


@dataclass(frozen=True)
class FolderSettings:
    """Where a run is kept and what it keeps: the folder save_path/savename (default name: the
    dataset and the time), or `resume` an existing run (a folder; "": save_path/savename, else the
    newest run there), its checkpoints (`save_checkpoints`: checkpoint_last.pth to resume, the best
    ones) and one every `save_every` epochs."""
    save_path: str = "Training_Results"
    savename: str = ""
    resume: str | None = None
    resume_force: bool = False
    overwrite: bool = False
    save_checkpoints: str = "last_and_best"
    save_every: int = 0

    def __post_init__(self):
        if self.save_checkpoints not in CHECKPOINT_POLICIES:
            raise SettingError(f"save_checkpoints must be one of {', '.join(CHECKPOINT_POLICIES)}, not "
                               f"{self.save_checkpoints!r}", ["save_checkpoints"])
        if self.resume is not None and not self.keeps_last:
            raise SettingError(f"resume continues from checkpoint_last.pth, which save_checkpoints "
                               f"{self.save_checkpoints} does not keep; drop one of them",
                               ["resume", "save_checkpoints"])
        if self.save_every < 0:
            raise SettingError(f"save_every must be 0 (off) or positive, got {self.save_every}", ["save_every"])

    @property
    def keeps_last(self):
        return self.save_checkpoints in ("last_and_best", "last")

    @property
    def keeps_best(self):
        return self.save_checkpoints in ("last_and_best", "best")


class RunFolder:
    def __init__(self, folder, lock=None, writes=True):
        self.folder = folder
        self.lock = lock
        self.writes = writes

    @classmethod
    def create(cls, save_path, name, overwrite=False):
        """A new folder save_path/name. An existing run is never replaced silently: the new one gets
        a suffixed name (name_1, name_2, ...), unless `overwrite`, and never while a process holds it."""
        make_folder(save_path)
        if not os.access(save_path, os.W_OK):
            raise UserError(f"--save_path {save_path} is not writable; choose a writable folder")
        folder, suffix = os.path.join(save_path, name), 1
        if overwrite and os.path.isdir(folder):
            RunLock(folder).release()  # never replace the folder of a run that is going on
            shutil.rmtree(folder)
        while True:
            try:
                os.makedirs(folder)
                break
            except FileExistsError:
                folder, suffix = os.path.join(save_path, f"{name}_{suffix}"), suffix + 1
        if suffix > 1:
            print(f"{os.path.join(save_path, name)} exists: this run goes to {folder} "
                  "(--resume continues the existing run, --overwrite replaces it)")
        return cls(folder, RunLock(folder))

    @classmethod
    def resume(cls, save_path, folder=None, name=None):
        """The run to continue: `folder`, which must hold one; else save_path/name, which may not
        hold a run yet (a job that always resumes starts its run the first time, and says so); else
        the newest run in save_path."""
        if folder:
            if not is_resumable(folder):
                raise UserError(f"--resume {folder}: no run to continue there (no {LAST_CHECKPOINT}); "
                                + runs_under(save_path))
        elif name:
            folder = os.path.join(save_path, name)
            if not is_resumable(folder):
                print(f"--resume: no run to continue at {folder} yet; starting it there")
        else:
            runs = resumable_runs(save_path)
            if not runs:
                raise UserError(f"--resume found no run in {save_path}; name one with --resume RUN_DIR")
            folder = max(runs, key=os.path.getmtime)
        if os.path.isdir(folder) and os.listdir(folder) and not os.path.exists(os.path.join(folder, "config.json")):
            raise UserError(f"--resume {folder}: not a run folder (no config.json)")
        make_folder(folder)
        return cls(folder, RunLock(folder))

    @classmethod
    def reader(cls, folder):
        """The folder another process writes (rank 0 under torchrun): read, never written."""
        return cls(folder, writes=False)

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        if self.lock is not None:
            self.lock.release()

    def path(self, name):
        return os.path.join(self.folder, name)

    @property
    def last_checkpoint(self):
        return self.path(LAST_CHECKPOINT)

    def saved_config(self):
        """The config.json of the run this folder already holds, or None."""
        if not os.path.exists(self.last_checkpoint):
            return None
        try:
            with open(self.path("config.json")) as handle:
                return json.load(handle)
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"cannot read {self.path('config.json')} ({error}); resume another run or start a "
                            "new one") from None

    def write_config(self, config):
        if self.writes:
            write_json(self.path("config.json"), config)

    def last_state(self):
        """checkpoint_last.pth (None when the folder holds none), after cutting the tables back to its
        epoch: rows written after it are written again. Returns (state, rows of metrics.csv)."""
        state = checkpoints.load(self.last_checkpoint) if os.path.exists(self.last_checkpoint) else None
        if not self.writes:
            return state, []
        for table in TABLES:
            truncate_csv(self.path(table), -1 if state is None else state["epoch"])
        return state, read_csv(self.path("metrics.csv"))

    def append(self, table, row):
        if self.writes:
            append_csv(self.path(table), row)

    def save_checkpoint(self, filename, network, epoch, config, state=None):
        """A checkpoint: the network with its description, the epoch, the run's config and, for
        checkpoint_last.pth, the training state."""
        if self.writes:
            checkpoint = {"network": network.state_dict(), **architectures.describe(network), "epoch": epoch,
                          "config": config, **(state or {})}
            checkpoints.save(checkpoint, self.path(filename))

    def write_summary(self, summary):
        """summary.json, with the folder's size on disk."""
        if self.writes:
            write_json(self.path("summary.json"), {**summary, "disk_bytes": folder_size(self.folder)})


def make_folder(folder):
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {folder} (--save_path): {error.strerror}; choose a writable folder") from None


def folder_size(folder):
    """Bytes of the files under `folder`."""
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


def is_resumable(folder):
    return os.path.exists(os.path.join(folder, "config.json")) and os.path.exists(os.path.join(folder, LAST_CHECKPOINT))


def resumable_runs(save_path):
    return [entry.path for entry in os.scandir(save_path) if entry.is_dir() and is_resumable(entry.path)] \
        if os.path.isdir(save_path) else []


def runs_under(save_path):
    """Which runs save_path holds, for an error message."""
    runs = sorted(os.path.basename(run) for run in resumable_runs(save_path))
    if not runs:
        return f"--save_path {save_path} holds no run to continue"
    shown = ", ".join(runs[:8]) + (f" and {len(runs) - 8} more" if len(runs) > 8 else "")
    return f"runs under --save_path {save_path}: {shown}"


class RunLock:
    """An exclusive OS lock on <run folder>/run.lock, held for the life of a run, so two processes
    never write one run folder: the second stops at once, naming the first's pid. The OS drops the
    lock with its process, even after kill -9, so it never goes stale. It is a POSIX record lock
    (lockf), which belongs to the process: dataloader workers forked from it do not hold it on
    after it dies, as they would hold a flock."""

    def __init__(self, folder):
        self.folder = folder
        self.handle = open(os.path.join(folder, "run.lock"), "a+")
        try:
            fcntl.lockf(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise UserError(f"{folder} is in use by another process (pid {holder}); wait for it to end or stop "
                            "it, then --resume") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"{os.getpid()}\n")
        self.handle.flush()

    def release(self):
        if not self.handle.closed:
            fcntl.lockf(self.handle, fcntl.LOCK_UN)
            self.handle.close()


def write_json(path, content):
    checkpoints.write_atomically(path, json.dumps(content, indent=2).encode())


def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def truncate_csv(path, last_epoch):
    """Keep the complete rows of epochs <= last_epoch (a killed run can leave a half-written line)."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames
        kept = [row for row in reader if None not in row.values() and None not in row
                and row["epoch"].isdigit() and int(row["epoch"]) <= last_epoch]
    if not kept:
        os.remove(path)
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(kept)
    checkpoints.write_atomically(path, text.getvalue().encode())


def append_csv(path, row):
    """One row at the end of the table; a failed write (a full disk) leaves the table as it was.
    A row with columns the table lacks (a run resumed by a newer version) rewrites the table with
    them, empty in the earlier rows."""
    header = None
    if os.path.exists(path):
        with Path(path).open(newline="") as handle:
            header = next(csv.reader([handle.readline()]), None)
    if header is not None and not set(row) <= set(header):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys([*header, *row])), restval="")
        writer.writeheader()
        writer.writerows([*read_csv(path), row])
        checkpoints.write_atomically(path, text.getvalue().encode())
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=header or list(row), restval="")
    if header is None:
        writer.writeheader()
    writer.writerow(row)
    size = os.path.getsize(path) if os.path.exists(path) else 0
    try:
        with open(path, "a", newline="") as handle:
            handle.write(text.getvalue())
    except OSError as error:
        with contextlib.suppress(OSError):
            os.truncate(path, size)
        raise checkpoints.write_error(path, error) from None
