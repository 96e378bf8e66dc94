"""Which epoch a run selects: for each storage metric, the first epoch with its best value on the
selection split (the validation split when there is one, else test), among the trained epochs.
Epoch 0, the network before training, is evaluated and logged but never selected: the released
protocol evaluates trained epochs only. main.py keeps a best checkpoint per metric by this rule,
and studies.summarize reads run tables by it."""


def is_candidate(epoch):
    return int(epoch) > 0


class BestEpochs:
    """The best epoch of each of `metrics` on `split` so far: {metric: {"value", "epoch", "checkpoint"}},
    the checkpoint being the file a run keeps for it (None when it keeps none)."""

    def __init__(self, metrics, split, records=None, keeps_checkpoints=True):
        self.metrics = list(metrics)
        self.split = split
        self.records = dict(records or {})
        self.keeps_checkpoints = keeps_checkpoints

    def update(self, epoch, split, values):
        """The metrics for which (epoch, split, values) is a new best; their records are updated,
        each with the checkpoint file a run keeps for it."""
        if split != self.split or not is_candidate(epoch):
            return []
        improved = [name for name in self.metrics
                    if name not in self.records or values[name] > self.records[name]["value"]]
        for name in improved:
            self.records[name] = {"value": values[name], "epoch": epoch,
                                  "checkpoint": f"checkpoint_best_{name}.pth" if self.keeps_checkpoints else None}
        return improved

    def epochs(self):
        return {name: record["epoch"] for name, record in self.records.items()}

    def rule(self, n_epochs):
        return (f"best epoch on the {self.split} split among the trained epochs 1-{n_epochs}; epoch 0 (before "
                "training) is evaluated, never selected")

    def summary(self, rows, metric_names):
        """(each record with "metrics": every split's `metric_names` at its epoch, the metrics of the
        last epoch) from a run's table rows."""
        metrics_at = {}
        for row in rows:
            metrics_at.setdefault(int(row["epoch"]), {})[row["split"]] = {name: float(row[name])
                                                                         for name in metric_names}
        best = {name: {**record, "metrics": metrics_at.get(record["epoch"], {})}
                for name, record in self.records.items()}
        return best, metrics_at[max(metrics_at)] if metrics_at else {}


def best_row(rows, split, metric):
    """Of table rows (dicts with "epoch", "split" and `metric`), the selected one on `split`: the
    first candidate epoch with the largest value; None when there is none."""
    candidates = [row for row in rows if row["split"] == split and is_candidate(row["epoch"])]
    if not candidates:
        return None
    return max(candidates, key=lambda row: (float(row[metric]), -int(row["epoch"])))
