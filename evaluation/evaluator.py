"""The evaluation of a network during training: each evaluation split embedded, its metrics
computed against the set its protocol ranks it against (evaluation/protocols.py), and, with a
re-ranking, every ranking metric again after diffusion re-ranking."""
import sys
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from evaluation.features import embed
from evaluation.metrics import compute, ranking_metrics, small_class_warnings, vote_depths
from evaluation.neighbours import diffusion_reranked


@dataclass
class Evaluated:
    metrics: dict  # {name: value}, re-ranked ones as "<name>+diffusion"
    features: np.ndarray  # of the queries
    labels: np.ndarray
    dataset: object
    protocol: str = "self"


class Evaluator:
    """evaluator(model, device) -> {row: Evaluated} for the `rankings` (evaluation.protocols) of
    the splits of `loaders` ({name: DataLoader} of the datasets under the evaluation transform),
    each split embedded once a call.

    `reranking` ({"k", "w", "shortlist"} and optionally "label", how warnings name its k; or None)
    also reports each ranking metric of a split ranked against itself after diffusion re-ranking.
    The first time it sees a row, it warns (on stderr) where a metric looks at more neighbours than
    the classes hold, and how many queries have no image of their class in the gallery."""

    def __init__(self, loaders, rankings, metric_names, seed=0, reranking=None):
        self.loaders = loaders
        self.splits = {split: loader.dataset for split, loader in loaders.items()}
        self.rankings = list(rankings)
        self.metric_names = list(metric_names)
        self.seed = seed
        self.reranking = reranking
        self.checked = set()

    def __call__(self, model, device):
        embedded = {}

        def embedding(split):
            if split not in embedded:
                embedded[split] = embed(model, self.loaders[split], device, description=f"embedding {split}")
            return embedded[split]

        results = {}
        for ranking in self.rankings:
            features, labels = embedding(ranking.query)
            if ranking.gallery is None:
                metrics = self._against_themselves(ranking.row, features, labels)
            else:
                # the two sets name their classes alike; their label numbers need not agree
                gallery_features, gallery_labels = embedding(ranking.gallery)
                query_classes = np.asarray(self.splits[ranking.query].class_names, dtype=object)[labels]
                gallery_classes = np.asarray(self.splits[ranking.gallery].class_names, dtype=object)[gallery_labels]
                self._check(ranking.row, gallery_classes, query_classes)
                metrics = compute(features, query_classes, self.metric_names, seed=self.seed,
                                  gallery=(gallery_features, gallery_classes))
            results[ranking.row] = Evaluated(metrics, features, labels, self.splits[ranking.query], ranking.protocol)
        return results

    def _against_themselves(self, row, features, labels):
        self._check(row, labels)
        metrics = compute(features, labels, self.metric_names, seed=self.seed)
        if self.reranking is not None:
            reranked = compute(features, labels, ranking_metrics(self.metric_names),
                               neighbours=diffusion_reranked(self.reranking["k"], self.reranking["w"],
                                                             self.reranking["shortlist"]))
            metrics |= {f"{name}+diffusion": value for name, value in reranked.items()}
        return metrics

    def _check(self, row, gallery_labels, query_labels=None):
        """Warnings about the classes of a row's gallery, once a row."""
        if row in self.checked:
            return
        self.checked.add(row)
        depths = vote_depths(self.metric_names)
        if self.reranking is not None and query_labels is None:
            depths[self.reranking.get("label", f"the re-ranking graph's k {self.reranking['k']}")] = self.reranking["k"]
        warnings = small_class_warnings(gallery_labels, depths, row)
        if query_labels is not None:
            missing = ~np.isin(query_labels, gallery_labels)
            if missing.any():
                warnings.append(f"{missing.sum()} of the {len(query_labels)} queries of the {row} row "
                                f"({len(np.unique(query_labels[missing]))} classes) have no image of their class in "
                                "the gallery: they count as misses, and MAP@R and R-precision leave them out")
        for warning in warnings:
            tqdm.write(f"warning: {warning}", file=sys.stderr)
