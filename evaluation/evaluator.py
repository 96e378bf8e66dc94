"""The evaluation of a network during training: each evaluation split embedded, its metrics
computed (and, with a re-ranking, every ranking metric again after diffusion re-ranking)."""
import sys
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from evaluation.features import embed
from evaluation.metrics import (
    compute,
    ranking_metrics,
    small_class_warnings,
    vote_depths,
)
from evaluation.neighbours import diffusion_reranked


@dataclass
class Evaluated:
    metrics: dict  # {name: value}, re-ranked ones as "<name>+diffusion"
    features: np.ndarray
    labels: np.ndarray
    dataset: object


class Evaluator:
    """evaluator(model, device) -> {split: Evaluated} for the `loaders` of the evaluation splits.

    `reranking` ({"k", "w", "shortlist"} and optionally "label", how warnings name its k; or None)
    also reports each ranking metric after diffusion re-ranking. The first time it sees a split,
    it warns (on stderr) where a metric looks at more neighbours than the split's classes hold."""

    def __init__(self, loaders, metric_names, seed=0, reranking=None):
        self.loaders = loaders
        self.metric_names = list(metric_names)
        self.seed = seed
        self.reranking = reranking
        self.checked = set()

    def __call__(self, model, device):
        results = {}
        for split, loader in self.loaders.items():
            features, labels = embed(model, loader, device, description=f"embedding {split}")
            self._check_class_sizes(split, labels)
            metrics = compute(features, labels, self.metric_names, seed=self.seed)
            if self.reranking is not None:
                reranked = compute(features, labels, ranking_metrics(self.metric_names),
                                   neighbours=diffusion_reranked(self.reranking["k"], self.reranking["w"],
                                                                 self.reranking["shortlist"]))
                metrics |= {f"{name}+diffusion": value for name, value in reranked.items()}
            results[split] = Evaluated(metrics, features, labels, loader.dataset)
        return results

    def _check_class_sizes(self, split, labels):
        if split in self.checked:
            return
        self.checked.add(split)
        depths = vote_depths(self.metric_names)
        if self.reranking is not None:
            label = self.reranking.get("label", f"the re-ranking graph's k {self.reranking['k']}")
            depths[label] = self.reranking["k"]
        for warning in small_class_warnings(labels, depths, split):
            tqdm.write(f"warning: {warning}", file=sys.stderr)
