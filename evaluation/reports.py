"""Pictures of what a network learnt, as PNGs drawn with matplotlib's Agg canvas (no display needed):

- recall_curves.png: every recall column of a run's metrics.csv over the epochs, per split;
- retrieval_<split>.png: sampled queries and their k nearest images, green border when the class
  matches the query's, red when not (needs image files or in-memory pixels);
- tsne_<split>.png: t-SNE of a sample of the embeddings, coloured by class;
- similarity_<split>.png: cosine similarities between a sample of images, grouped by class;
- confusion_<split>.png: confusion matrix of leave-one-out majority-vote k-NN classification
  (the knn_top1 metric); with many classes, the classes with the most errors.

main.py draws them at the end of a run (of the final network). For a checkpoint:

    python -m evaluation.reports --checkpoint RUN/checkpoint_best_e_recall@1.pth [--split test] [--out FOLDER]

(the paper's files also need --dataset and --source; this codebase's name their run's.)
"""
import csv
import os
import re

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from sklearn.manifold import TSNE

import datasets
from datasets.image_dataset import load_rgb
from errors import CommandParser, UserError, run_command
from evaluation import networks
from evaluation.export import add_network_flags, device_of
from evaluation.features import embed
from evaluation.metrics import DEFAULT_VOTES
from evaluation.neighbours import nearest_neighbours, search
from evaluation.voting import majority_vote

RECALL_COLUMN = re.compile(r"^[ec]_recall@\d+$")
MATCH, MISMATCH, QUERY = "#1a9850", "#d73027", "#2166ac"
THUMBNAIL = 96
RUN_TSNE_POINTS = 300  # with RUN_TSNE_ITERATIONS: a few seconds on 2 cores
RUN_TSNE_ITERATIONS = 500


def _save(figure, path):
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def recall_curves(metrics_csv, path):
    """Recall@k over the epochs, one line per recall column and split; None when there is none."""
    with open(metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = [column for column in (rows[0] if rows else {}) if RECALL_COLUMN.match(column)]
    if not columns:
        return None
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for split, style in zip(sorted({row["split"] for row in rows}), ("-", "--", ":", "-.")):
        split_rows = [row for row in rows if row["split"] == split]
        epochs = [int(row["epoch"]) for row in split_rows]
        for color, column in enumerate(columns):
            axes.plot(epochs, [float(row[column]) for row in split_rows], style, color=f"C{color}", marker=".",
                      label=f"{split} {column}")
    axes.set(xlabel="epoch", ylabel="recall", title="Recall@k over training")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", ncol=2)
    return _save(figure, path)


def image_reader(dataset):
    """A function index -> RGB PIL image for an ImageDataset, or None when it holds no images."""
    if getattr(dataset, "paths", None) is not None:
        return lambda index: load_rgb(dataset.paths[index])
    if getattr(dataset, "pixels", None) is not None:
        return lambda index: Image.fromarray(dataset.pixels[index]).convert("RGB")
    return None


def retrieval_grid(features, labels, read_image, path, n_queries=8, k=5, seed=0, class_names=None):
    """n_queries random queries (rows) and their k nearest other images."""
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(len(features), min(n_queries, len(features)), replace=False))
    k = min(k, len(features) - 1)
    found = search(features[queries], features, k + 1)
    retrieved = [[j for j in row if j != query][:k] for query, row in zip(queries, found)]
    figure = Figure(figsize=(1.6 * (k + 1), 1.7 * len(queries)), layout="constrained")
    grid = figure.subplots(len(queries), k + 1, squeeze=False)
    for row, (query, neighbours) in enumerate(zip(queries, retrieved)):
        cells = [(query, QUERY, "query")] + [(j, MATCH if labels[j] == labels[query] else MISMATCH, f"{rank + 1}")
                                             for rank, j in enumerate(neighbours)]
        for column, (index, color, title) in enumerate(cells):
            axes = grid[row, column]
            image = read_image(int(index))
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            axes.imshow(image)
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(4)
            axes.set_title(f"{title}: {_name(class_names, labels[index])}", fontsize=7)
    figure.suptitle("retrieval: green = same class as the query, red = another class")
    return _save(figure, path)


def tsne(features, labels, path, max_points=1000, seed=0, iterations=1000):
    """t-SNE of at most max_points random embeddings, coloured by class; None below 5 points."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(features), min(max_points, len(features)), replace=False))
    if len(sample) < 5:
        return None
    points = TSNE(n_components=2, init="pca", learning_rate="auto", perplexity=min(30.0, (len(sample) - 1) / 3),
                  max_iter=iterations, random_state=seed).fit_transform(features[sample])
    _, classes = np.unique(labels[sample], return_inverse=True)
    figure = Figure(figsize=(6, 6))
    axes = figure.add_subplot()
    axes.scatter(points[:, 0], points[:, 1], c=classes % 20, cmap="tab20", vmin=0, vmax=19, s=8)
    axes.set(xticks=[], yticks=[], title=f"t-SNE of {len(sample)} embeddings, {classes.max() + 1} classes")
    return _save(figure, path)


def similarity_matrix(features, labels, path, n_classes=10, per_class=5, seed=0, class_names=None):
    """Cosine similarities of up to per_class images of each of up to n_classes random classes."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))[:n_classes]
    sample = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.sort(classes)])
    unit = features[sample].astype(np.float64)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    figure = Figure(figsize=(6, 5))
    axes = figure.add_subplot()
    shown = axes.imshow(unit @ unit.T, cmap="viridis")
    figure.colorbar(shown, ax=axes, label="cosine similarity")
    boundaries = np.flatnonzero(np.diff(labels[sample])) + 0.5
    for boundary in boundaries:
        axes.axhline(boundary, color="white", linewidth=0.8)
        axes.axvline(boundary, color="white", linewidth=0.8)
    edges = np.concatenate([[-0.5], boundaries, [len(sample) - 0.5]])
    names = [_name(class_names, label) for label in np.sort(classes)]
    axes.set_xticks((edges[:-1] + edges[1:]) / 2, names, rotation=90, fontsize=7)
    axes.set_yticks((edges[:-1] + edges[1:]) / 2, names, fontsize=7)
    axes.set_title(f"{len(sample)} images of {len(classes)} classes, grouped by class")
    return _save(figure, path)


def confusion_matrix(features, labels, class_names, path, k=DEFAULT_VOTES, max_classes=30):
    """Rows: true class, columns: majority vote of the k nearest other images (leave-one-out)."""
    values, labels = np.unique(labels, return_inverse=True)
    names = [_name(class_names, value) for value in values]
    predicted = majority_vote(labels[nearest_neighbours(features, k)], 1)[:, 0]
    errors = np.bincount(labels[predicted != labels], minlength=len(values))
    shown = np.arange(len(values)) if len(values) <= max_classes else np.sort(
        np.argsort(-errors, kind="stable")[:max_classes])
    # Columns: the shown classes, then one "other" column for votes that went to any other class.
    column = np.full(len(values) + 1, len(shown))
    column[shown] = np.arange(len(shown))
    is_shown = np.isin(labels, shown)
    counts = np.zeros((len(shown), len(shown) + (len(shown) < len(values))), dtype=np.int64)
    np.add.at(counts, (column[labels[is_shown]], column[predicted[is_shown]]), 1)
    names = [names[label] for label in shown]
    other = len(shown) < len(values)
    figure = Figure(figsize=(2 + 0.3 * counts.shape[1], 1.5 + 0.3 * counts.shape[0]))
    axes = figure.add_subplot()
    axes.imshow(counts, cmap="Blues")
    if counts.shape[0] <= 15:
        for (row, column), count in np.ndenumerate(counts):
            axes.text(column, row, count, ha="center", va="center", fontsize=7,
                      color="white" if count > counts.max() / 2 else "black")
    axes.set_xticks(range(counts.shape[1]), names + ["other"] * other, rotation=90, fontsize=6)
    axes.set_yticks(range(len(shown)), names, fontsize=6)
    accuracy = np.mean(predicted == labels)
    subset = f", the {len(shown)} classes with most errors" if other else ""
    axes.set(xlabel=f"majority vote of the {k} nearest", ylabel="true class",
             title=f"k-NN classification, accuracy {accuracy:.3f}{subset}")
    return _save(figure, path)


def _name(class_names, label):
    return str(class_names[label] if class_names is not None else label)


def write_reports(folder, features=None, labels=None, dataset=None, split="test", metrics_csv=None,
                  tsne_points=1000, seed=0, tsne_iterations=1000):
    """All the reports the inputs allow, into `folder`; {report name: PNG path}. Without features,
    only the recall curves."""
    os.makedirs(folder, exist_ok=True)
    written = {}
    if metrics_csv is not None and os.path.exists(metrics_csv):
        written["recall_curves"] = recall_curves(metrics_csv, os.path.join(folder, "recall_curves.png"))
    if features is not None and len(features) > 1:
        features, labels = np.asarray(features, dtype=np.float32), np.asarray(labels)
        class_names = getattr(dataset, "class_names", None)
        read_image = image_reader(dataset) if dataset is not None else None
        if read_image is not None:
            written[f"retrieval_{split}"] = retrieval_grid(features, labels, read_image,
                                                           os.path.join(folder, f"retrieval_{split}.png"), seed=seed,
                                                           class_names=class_names)
        written[f"tsne_{split}"] = tsne(features, labels, os.path.join(folder, f"tsne_{split}.png"), tsne_points,
                                        seed, tsne_iterations)
        written[f"similarity_{split}"] = similarity_matrix(features, labels,
                                                           os.path.join(folder, f"similarity_{split}.png"), seed=seed,
                                                           class_names=class_names)
        written[f"confusion_{split}"] = confusion_matrix(features, labels, class_names,
                                                         os.path.join(folder, f"confusion_{split}.png"))
    return {name: path for name, path in written.items() if path is not None}


def write_run_reports(folder, evaluated, seed=0, wandb_run=None):
    """The reports of a finished run, into its folder: recall curves from metrics.csv, the others of
    the final network on the test split (else the last evaluated one). `evaluated`: {split:
    (features, labels, dataset)}. Kept cheap: a shorter t-SNE of at most RUN_TSNE_POINTS embeddings."""
    split = "test" if "test" in evaluated else next(reversed(evaluated), None)
    features, labels, dataset = evaluated[split] if split is not None else (None, None, None)
    written = write_reports(folder, features, labels, dataset, split, os.path.join(folder, "metrics.csv"),
                            RUN_TSNE_POINTS, seed, RUN_TSNE_ITERATIONS)
    if wandb_run is not None and written:
        log_to_wandb(wandb_run, written)
    return written


def log_to_wandb(wandb_run, reports):
    import wandb

    wandb_run.log({f"reports/{name}": wandb.Image(path) for name, path in reports.items()})


def run(opt):
    checkpoint = networks.load(opt.checkpoint, opt.arch, opt.embed_dim)
    config = checkpoint.config
    dataset, source = opt.dataset or config.get("dataset"), opt.source or config.get("source")
    if dataset is None:
        raise UserError(f"{opt.checkpoint} does not name its dataset; pass --dataset and --source")
    splits = datasets.select(dataset, source, augmentation=config.get("augmentation", "base"),
                             use_tv_split=config.get("use_tv_split", False),
                             tv_split_perc=config.get("tv_split_perc", 0.8),
                             tv_split_by_samples=config.get("tv_split_by_samples", False))
    if opt.split not in splits:
        raise UserError(f"the run of {opt.checkpoint} has no {opt.split} split; choose one of {', '.join(splits)}")
    device = device_of(opt.gpu)
    loader = torch.utils.data.DataLoader(splits[opt.split], batch_size=opt.bs, shuffle=False, num_workers=opt.kernels)
    features, labels = embed(checkpoint.network.to(device), loader, device, description=f"embedding {opt.split}")
    run_folder = os.path.dirname(os.path.abspath(opt.checkpoint))
    out = opt.out or os.path.join(run_folder, os.path.splitext(os.path.basename(opt.checkpoint))[0] + "_reports")
    try:
        written = write_reports(out, features, labels, splits[opt.split], opt.split,
                                os.path.join(run_folder, "metrics.csv"), opt.tsne_points)
    except OSError as error:
        raise UserError(f"cannot write {error.filename or out}: {error.strerror}; choose another --out") from None
    for path in written.values():
        print(path)
    return written


def main(argv=None):
    parser = CommandParser(command="python -m evaluation.reports", description="Draw the reports of a checkpoint: retrieval grid, t-SNE, "
                                                 "similarity and confusion matrices, and the run's recall curves.")
    add_network_flags(parser)
    parser.add_argument("--dataset", default=None, choices=datasets.names(), help="default: the checkpoint's run's")
    parser.add_argument("--source", default=None, help="default: the checkpoint's run's")
    parser.add_argument("--split", default="test", choices=["test", "val", "train"])
    parser.add_argument("--tsne_points", type=int, default=2000, help="t-SNE of a random sample of this size")
    parser.add_argument("--out", default=None, help="folder of the PNGs (default: <checkpoint>_reports next to it)")
    run_command(run, parser.parse_args(argv))


if __name__ == "__main__":
    main()
