"""The evaluation of a network: each evaluation split embedded, its metrics computed against the
set its protocol ranks it against (evaluation/protocols.py), and, with a re-ranking, every ranking
metric again after diffusion re-ranking. `setup` builds it from the splits and EvaluationSettings:
the one set-up of training, Test_pretrained_models.py and the unseen-class study."""
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

import diffusion
from errors import SettingError, counted
from evaluation.features import embed
from evaluation.metrics import check_names, compute, ranking_metrics, small_class_warnings, vote_depths
from evaluation.neighbours import diffusion_reranked
from evaluation.protocols import PROTOCOLS, rankings


@dataclass(frozen=True)
class EvaluationSettings:
    """What an evaluation computes: `evaluation_metrics` (evaluation.metrics names; None: the
    dataset's, which the caller fills in), `storage_metrics` (a best checkpoint is kept for each;
    always computed too), `evaluation_protocol` (evaluation.protocols; None: the dataset's), and
    with `evaluation_diffusion` every ranking metric again after diffusion re-ranking of each
    query's `evaluation_diffusion_shortlist` nearest neighbours as `reranking` says."""
    evaluation_metrics: tuple[str, ...] | None = None
    storage_metrics: tuple[str, ...] = ("e_recall@1",)
    evaluation_protocol: str | None = None
    evaluation_diffusion: bool = False
    evaluation_diffusion_shortlist: int = 100
    reranking: diffusion.Settings = field(default_factory=diffusion.rerank_settings)

    def __post_init__(self):
        object.__setattr__(self, "storage_metrics", tuple(self.storage_metrics))
        for name, metrics in (("evaluation_metrics", self.evaluation_metrics), ("storage_metrics",
                                                                                 self.storage_metrics)):
            try:
                check_names(metrics or ())
            except ValueError as error:
                raise SettingError(f"{name}: {error}", [name]) from None
        if self.evaluation_metrics is not None:
            object.__setattr__(self, "evaluation_metrics", tuple(dict.fromkeys([*self.evaluation_metrics,
                                                                                *self.storage_metrics])))
        if self.evaluation_protocol is not None:
            PROTOCOLS.get(self.evaluation_protocol)
        if self.evaluation_diffusion:
            if self.evaluation_protocol not in (None, "self"):
                raise SettingError(f"evaluation_diffusion re-ranks a split against itself; it does not apply to "
                                   f"evaluation_protocol {self.evaluation_protocol}",
                                   ["evaluation_diffusion", "evaluation_protocol"])
            diffusion.rerank_check(self.reranking)
        if self.evaluation_diffusion_shortlist < 1:
            raise SettingError(f"evaluation_diffusion_shortlist must be at least 1, got "
                               f"{self.evaluation_diffusion_shortlist}", ["evaluation_diffusion_shortlist"])


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
    each split embedded once a call, with the metrics and re-ranking of `settings`
    (EvaluationSettings, its metrics filled in).

    The first time it sees a row, it warns (on stderr) where a metric looks at more neighbours than
    the classes hold, and how many queries have no image of their class in the gallery; the
    re-ranking's graph is named there as `reranking_label` says (default: by its k)."""

    def __init__(self, loaders, rankings, settings, seed=0, reranking_label=None):
        self.loaders = loaders
        self.splits = {split: loader.dataset for split, loader in loaders.items()}
        self.rankings = list(rankings)
        self.metric_names = list(settings.evaluation_metrics)
        self.seed = seed
        self.settings = settings
        self.reranking = settings.reranking if settings.evaluation_diffusion else None
        self.reranking_label = reranking_label or f"the re-ranking graph's k {settings.reranking.k}"
        self.checked = set()

    def __call__(self, model, device):
        embedded = {}

        def embedding(split):
            if split not in embedded:
                embedded[split] = embed(model, self.loaders[split], device, description=f"embedding {split}")
            return embedded[split]

        return self.of_embeddings(embedding)

    def of_embeddings(self, embedding):
        """{row: Evaluated} of embeddings given by split: `embedding(split)` -> (features, labels), or
        a {split: (features, labels)} (e.g. several networks' embeddings concatenated)."""
        embedding = embedding.__getitem__ if isinstance(embedding, dict) else embedding
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

    def embed_splits(self, model, device):
        """{split: (features, labels)} of every split the rankings use."""
        return {split: embed(model, loader, device, description=f"embedding {split}")
                for split, loader in self.loaders.items()}

    def _against_themselves(self, row, features, labels):
        self._check(row, labels)
        metrics = compute(features, labels, self.metric_names, seed=self.seed)
        if self.reranking is not None:
            reranked = compute(features, labels, ranking_metrics(self.metric_names),
                               neighbours=diffusion_reranked(self.reranking,
                                                             self.settings.evaluation_diffusion_shortlist))
            metrics |= {f"{name}+diffusion": value for name, value in reranked.items()}
        return metrics

    def _check(self, row, gallery_labels, query_labels=None):
        """Warnings about the classes of a row's gallery, once a row."""
        if row in self.checked:
            return
        self.checked.add(row)
        depths = vote_depths(self.metric_names)
        if self.reranking is not None and query_labels is None:
            depths[self.reranking_label] = self.reranking.k
        warnings = small_class_warnings(gallery_labels, depths, row)
        if query_labels is not None:
            missing = ~np.isin(query_labels, gallery_labels)
            if missing.any():
                warnings.append(f"{missing.sum()} of the {len(query_labels)} queries of the {row} row "
                                f"({counted(len(np.unique(query_labels[missing])), 'class', 'classes')}) have no image "
                                "of their class in the gallery: they count as misses, and MAP@R and R-precision leave "
                                "them out")
        for warning in warnings:
            tqdm.write(f"warning: {warning}", file=sys.stderr)


def setup(splits, settings, *, batch_size, workers=0, seed=0, pin_memory=False, rows=None, reranking_label=None):
    """The Evaluator of `splits` ({name: ImageDataset}, "train" among them, the others under the
    evaluation transform) by `settings` (EvaluationSettings, its metrics and protocol filled in):
    a loader for each split its protocol ranks, the training images under the evaluation transform
    where they are the gallery. `rows` keeps only those metrics.csv rows (e.g. ["test"])."""
    ranked = rankings(splits, settings.evaluation_protocol)
    if rows is not None:
        ranked = [ranking for ranking in ranked if ranking.row in rows]
        if not ranked:
            raise SettingError(f"evaluation_protocol {settings.evaluation_protocol} gives no {' or '.join(rows)} "
                               f"row on splits {', '.join(splits)}", ["evaluation_protocol"])
    evaluated = {split: splits[split] for ranking in ranked for split in (ranking.query, ranking.gallery)
                 if split not in (None, "train")}
    if any(ranking.gallery == "train" for ranking in ranked):  # the training images as a gallery
        transform = next(dataset.transform for split, dataset in splits.items() if split != "train")
        evaluated["train"] = splits["train"].with_transform(transform)
    # Loaders draw their worker seeds from their own generators, not from the training RNG.
    loaders = {split: torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                                  num_workers=workers, pin_memory=pin_memory,
                                                  persistent_workers=workers > 0, generator=torch.Generator())
               for split, dataset in evaluated.items()}
    return Evaluator(loaders, ranked, settings, seed, reranking_label)
