"""Studies over many training runs, each a command that calls training.run in-process:

    python -m studies.summarize RUNS...                     a table of finished runs, mean ± std over seeds
    python -m studies.unseen_classes --holdout_classes N    the unseen-class protocol
    python -m studies.tune STUDY.yaml                        hyperparameter search on class-disjoint folds
    python -m studies.compare A B                            differences with confidence intervals and p-values
"""
