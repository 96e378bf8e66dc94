"""Pictures of what a network learnt, as PNGs drawn with matplotlib's Agg canvas (no display needed).
Each title says which network it shows (the epoch, and the checkpoint when one was read).

- recall_curves.png: every recall column of a run's metrics.csv over the epochs, per split, with
  the selected (best) epochs marked, and below them the training loss of training.csv;
- retrieval_<split>.png: queries of distinct classes and their k nearest images, green border
  when the class matches the query's, red when not (needs image files or in-memory pixels);
- retrieval_page_<split>/index.html: the same for up to 100 queries, as a static HTML page of
  thumbnails with the distances (evaluation.retrieval_page; not among the returned PNGs);
- tsne_<split>.png: t-SNE of a sample of the embeddings, coloured by class, with a legend (the
  20 classes with most points have their own colour, the others are grey);
- tsne_thumbnails_<split>.png: the same t-SNE positions with up to 200 of the images as thumbnails
  (those that would overlap left out), framed in their class's colour (needs images);
- similarity_<split>.png: cosine similarities between a sample of images, grouped by class;
- confusion_<split>.png: confusion matrix of leave-one-out majority-vote k-NN classification,
  k taken from the class sizes (the median class size minus one, at most 20, at least 1); with
  many classes, the classes with the most errors.

main.py draws them at the end of a run (of the final network). For a checkpoint:

    python -m evaluation.reports --checkpoint RUN/checkpoint_best_e_recall@1.pth [--split test] [--out FOLDER]

(the paper's files also need --dataset and --source; this codebase's name their run's.)
"""
import csv
import json
import os
import re

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from matplotlib.ticker import FormatStrFormatter, MaxNLocator
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
TSNE_COLOURED = 20  # classes with a colour of their own (tab20) in the t-SNE; the others are grey
TSNE_THUMBNAILS = 200  # at most this many images on the thumbnail t-SNE, fewer where they would overlap
TSNE_THUMBNAIL = 40  # their size in pixels


def _save(figure, path):
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _read_csv(path):
    if path is None or not os.path.exists(path):
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def recall_curves(metrics_csv, path, selected=None, training_csv=None):
    """Recall@k over the epochs, one line per recall column and split, with a dashed line at each
    selected epoch ({name: epoch}, e.g. the best e_recall@1); below them, from `training_csv`, the
    training loss (the distillation term on its own scale, drawn only when it was on) and the
    learning rate. None when metrics_csv has no recall column."""
    rows = _read_csv(metrics_csv)
    columns = [column for column in (rows[0] if rows else {}) if RECALL_COLUMN.match(column)]
    if not columns:
        return None
    training = [row for row in _read_csv(training_csv) if row.get("loss")]
    rates = [row for row in training if row.get("lr")]
    heights = [4] + [2.6] * bool(training) + [1.6] * bool(rates)
    figure = Figure(figsize=(8.5, sum(heights) + 0.6), layout="constrained")
    axes = figure.subplots(len(heights), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    for split, style in zip(sorted({row["split"] for row in rows}), ("-", "--", ":", "-.")):
        split_rows = [row for row in rows if row["split"] == split]
        epochs = [int(row["epoch"]) for row in split_rows]
        for color, column in enumerate(columns):
            axes[0].plot(epochs, [float(row[column]) for row in split_rows], style, color=f"C{color}", marker=".",
                         label=f"{split} {column}")
    last = max(int(row["epoch"]) for row in rows)
    for number, (name, epoch) in enumerate((selected or {}).items()):
        for panel in axes:
            panel.axvline(epoch, color="black", linestyle="--", linewidth=0.8)
        # inside the axes at the top, on the side of the line with room, on white: never clipped, and
        # the legend sits outside the axes
        right_half = epoch > last / 2
        axes[0].annotate(f"best {name}: epoch {epoch}", (epoch, 1), xycoords=("data", "axes fraction"),
                         xytext=(-4 if right_half else 4, -4 - 12 * number), textcoords="offset points", fontsize=8,
                         ha="right" if right_half else "left", va="top",
                         bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    axes[0].set(ylabel="recall", title="Recall@k over training (epoch 0: before training)")
    axes[0].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    if training:
        _loss_panel(axes[1], training)
    if rates:
        panel = axes[-1]
        panel.plot([int(row["epoch"]) for row in rates], [float(row["lr"]) for row in rates], marker=".",
                   color="C7", label="lr")
        panel.set(ylabel="learning rate", title="Learning rate at the end of each epoch")
        panel.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))  # no offset text over the title
    for panel in axes:
        panel.grid(alpha=0.3)
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set(xlabel="epoch")
    return _save(figure, path)


def _loss_panel(panel, training):
    """The epoch means of the loss and its DML term; the distillation term (about 1000 times smaller)
    on a right-hand axis of its own, and only when the run distilled (kd_weight above 0 some epoch)."""
    epochs = [int(row["epoch"]) for row in training]
    for term in ("loss", "dml"):
        if term in training[0]:
            panel.plot(epochs, [float(row[term]) for row in training], marker=".", label=term,
                       color="C0" if term == "loss" else "C1")
    panel.set(ylabel="training loss (epoch mean)", title="Training loss")
    handles, labels = panel.get_legend_handles_labels()
    distilled = any(float(row.get("kd_weight") or 0) > 0 or float(row.get("kd") or 0) != 0 for row in training)
    if distilled and "kd" in training[0]:
        kd_axes = panel.twinx()
        kd_axes.plot(epochs, [float(row["kd"]) for row in training], marker=".", color="C2", label="kd")
        kd_axes.set_ylabel("kd term (its own scale)", color="C2")
        kd_axes.tick_params(axis="y", colors="C2")
        more_handles, more_labels = kd_axes.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    # right of the kd axis's tick labels and label when there is one
    panel.legend(handles, labels, fontsize="small", loc="upper left", bbox_to_anchor=(1.17 if distilled else 1.01, 1),
                 frameon=False)


def image_reader(dataset):
    """A function index -> RGB PIL image for an ImageDataset, or None when it holds no images."""
    if getattr(dataset, "paths", None) is not None:
        return lambda index: load_rgb(dataset.paths[index])
    if getattr(dataset, "pixels", None) is not None:
        return lambda index: Image.fromarray(dataset.pixels[index]).convert("RGB")
    return None


def retrieval_grid(features, labels, read_image, path, n_queries=8, k=5, seed=0, class_names=None, caption=""):
    """Queries (rows) of n_queries random distinct classes, one random image each, and their k
    nearest other images."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))[:n_queries]
    queries = np.sort([rng.choice(np.flatnonzero(labels == label)) for label in classes])
    k = min(k, len(features) - 1)
    retrieved = _nearest_others(features, queries, k)
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
    figure.suptitle(f"retrieval{caption}: green = same class as the query, red = another class")
    return _save(figure, path)


def _nearest_others(features, queries, k):
    """Each query row's k nearest other rows (leave-one-out), nearest first."""
    found = search(features[queries], features, k + 1)
    return [[j for j in row if j != query][:k] for query, row in zip(queries, found)]


def retrieval_page(features, labels, dataset, read_image, folder, n_queries=100, k=5, seed=0, class_names=None,
                   caption="", network_line=""):
    """evaluation.retrieval_page's page of n_queries random images (of distinct classes while there
    are classes left) and their k nearest other images: folder/index.html. `network_line`: a line
    under the title saying which network and how well it retrieves."""
    from evaluation.retrieval_page import Picture, QueryRow, write_page

    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))[:n_queries]
    queries = [int(rng.choice(np.flatnonzero(labels == label))) for label in classes]
    if len(queries) < n_queries:
        others = np.setdiff1d(np.arange(len(labels)), queries)
        queries += [int(index) for index in rng.permutation(others)[:n_queries - len(queries)]]
    queries = np.sort(queries)
    k = min(k, len(features) - 1)
    paths = getattr(dataset, "paths", None)

    def picture(index, caption, **details):
        source, title = (paths[index], os.path.basename(paths[index])) if paths is not None else (read_image(index), "")
        return Picture(source, caption, _name(class_names, labels[index]), title=title, **details)

    rows = [QueryRow(picture(query, "query"),
                     [picture(j, f"{rank + 1}", distance=float(np.linalg.norm(features[j] - features[query])),
                              match=bool(labels[j] == labels[query])) for rank, j in enumerate(neighbours)])
            for query, neighbours in zip(queries, _nearest_others(features, queries, k))]
    sample = f"{len(queries)} random queries of {len(features)} images, each query left out of its own results"
    return write_page(folder, rows, title=f"Retrieval{caption}",
                      note=f"{network_line}. {sample}" if network_line else sample)


def recorded_recall(metrics_csv, split, epoch):
    """'split Recall@1 0.9085, Recall@2 ...' of metrics.csv's row of `epoch`, as the run evaluated it
    (its protocol); "" without one."""
    for row in _read_csv(metrics_csv):
        if row.get("split") == split and row.get("epoch") == str(epoch):
            values = [f"Recall@{column.split('@')[1]} {float(row[column]):.4f}" for column in row
                      if RECALL_COLUMN.match(column) and column.startswith("e_") and row[column] not in ("", None)]
            if values:
                return f"{split} " + ", ".join(values) + f" (metrics.csv, epoch {epoch})"
    return ""


def leave_one_out_recall(features, labels):
    """'Recall@1 x of N images': how often an image's nearest other image has its class."""
    nearest = np.array([row[0] for row in _nearest_others(features, np.arange(len(features)), 1)])
    return f"Recall@1 {np.mean(labels[nearest] == labels):.4f} of {len(features)} images, each left out"


def tsne_embedding(features, max_points=1000, seed=0, iterations=1000):
    """(sample, points): t-SNE positions (points, len(sample) x 2) of at most max_points random
    embeddings (their indices, sorted: sample); None below 5 points. Computed once for both the
    coloured points and the thumbnails."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(features), min(max_points, len(features)), replace=False))
    if len(sample) < 5:
        return None
    points = TSNE(n_components=2, init="pca", learning_rate="auto", perplexity=min(30.0, (len(sample) - 1) / 3),
                  max_iter=iterations, random_state=seed).fit_transform(features[sample])
    return sample, points


def _tsne_colours(sample_labels):
    """(class values, class index per point, the TSNE_COLOURED class indices with most points)."""
    values, classes, counts = np.unique(sample_labels, return_inverse=True, return_counts=True)
    return values, classes, np.sort(np.argsort(-counts, kind="stable")[:TSNE_COLOURED])


def tsne(features, labels, path, max_points=1000, seed=0, iterations=1000, class_names=None, caption="",
         embedding=None):
    """t-SNE of at most max_points random embeddings, coloured by class: the TSNE_COLOURED classes
    with most points get a colour and a legend entry each, the others are grey; None below 5 points.
    `embedding`: tsne_embedding's (sample, points), computed here when None."""
    embedding = embedding if embedding is not None else tsne_embedding(features, max_points, seed, iterations)
    if embedding is None:
        return None
    sample, points = embedding
    values, classes, coloured = _tsne_colours(labels[sample])
    figure = Figure(figsize=(7.5, 6), layout="constrained")
    axes = figure.add_subplot()
    others = ~np.isin(classes, coloured)
    if others.any():
        axes.scatter(points[others, 0], points[others, 1], color="lightgrey", s=6,
                     label=f"{len(values) - len(coloured)} other classes")
    palette = matplotlib.colormaps["tab20"]
    for colour, class_index in enumerate(coloured):
        members = classes == class_index
        axes.scatter(points[members, 0], points[members, 1], color=palette(colour), s=8,
                     label=_name(class_names, values[class_index]))
    axes.legend(fontsize=6, markerscale=1.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    axes.set(xticks=[], yticks=[], title=f"t-SNE of {len(sample)} embeddings, {len(values)} classes{caption}")
    return _save(figure, path)


def tsne_thumbnails(embedding, labels, read_image, path, max_images=TSNE_THUMBNAILS, size=TSNE_THUMBNAIL,
                    seed=0, caption=""):
    """The images of at most max_images random points of tsne_embedding's (sample, points), drawn as
    thumbnails at their t-SNE positions, each framed in its class's colour in the t-SNE points plot;
    a point whose thumbnail would overlap one already drawn is skipped. None without an embedding."""
    if embedding is None:
        return None
    sample, points = embedding
    _, classes, coloured = _tsne_colours(labels[sample])
    palette = matplotlib.colormaps["tab20"]
    colour_of = {class_index: palette(colour) for colour, class_index in enumerate(coloured)}
    inches, dpi = 10, 100
    low, high = points.min(axis=0), points.max(axis=0)
    # positions in framed-thumbnail widths (the axes span about 85% of the figure once the title and
    # the 5% margins are off): two thumbnails overlap when both coordinates differ by less than 1
    scaled = (points - low) / np.maximum(high - low, 1e-12) * (inches * dpi * 0.85 / (size + 6))
    kept = []
    for index in np.random.default_rng(seed).permutation(len(sample)):
        if len(kept) == max_images:
            break
        if not kept or np.abs(scaled[kept] - scaled[index]).max(axis=1).min() >= 1:
            kept.append(index)
    figure = Figure(figsize=(inches, inches), layout="constrained")
    axes = figure.add_subplot()
    axes.scatter(points[:, 0], points[:, 1], s=2, color="lightgrey")
    for index in kept:
        image = read_image(int(sample[index]))
        image.thumbnail((size, size))
        frame = colour_of.get(classes[index], "grey")
        box = AnnotationBbox(OffsetImage(np.asarray(image), zoom=1), points[index], frameon=True, pad=0.1,
                             bboxprops={"edgecolor": frame, "linewidth": 2})
        axes.add_artist(box)
    margin = (high - low) * 0.05 + 1e-6
    axes.set(xlim=(low[0] - margin[0], high[0] + margin[0]), ylim=(low[1] - margin[1], high[1] + margin[1]),
             xticks=[], yticks=[],
             title=f"t-SNE of {len(sample)} embeddings: {len(kept)} of their images, framed in the colours of "
                   f"their classes{caption}")
    figure.dpi = dpi
    return _save(figure, path)


def similarity_matrix(features, labels, path, n_classes=10, per_class=5, seed=0, class_names=None, caption=""):
    """Cosine similarities of up to per_class images of each of up to n_classes random classes."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))[:n_classes]
    sample = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.sort(classes)])
    unit = features[sample].astype(np.float64)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    similarities = unit @ unit.T
    same = labels[sample][:, None] == labels[sample][None, :]
    within = similarities[same & ~np.eye(len(sample), dtype=bool)]
    between = similarities[~same]
    figure = Figure(figsize=(6.5, 5.5), layout="constrained")
    axes = figure.add_subplot()
    # The whole range of the cosine, fixed: a scale fitted to the values (0.94 to 1) would paint a
    # collapsed embedding, all of whose images point one way, as well separated classes.
    shown = axes.imshow(similarities, cmap="RdBu_r", vmin=-1, vmax=1)
    figure.colorbar(shown, ax=axes, label="cosine similarity", shrink=0.9)
    boundaries = np.flatnonzero(np.diff(labels[sample])) + 0.5
    for boundary in boundaries:
        axes.axhline(boundary, color="white", linewidth=0.8)
        axes.axvline(boundary, color="white", linewidth=0.8)
    edges = np.concatenate([[-0.5], boundaries, [len(sample) - 0.5]])
    names = [_name(class_names, label) for label in np.sort(classes)]
    axes.set_xticks((edges[:-1] + edges[1:]) / 2, names, rotation=90, fontsize=9)
    axes.set_yticks((edges[:-1] + edges[1:]) / 2, names, fontsize=9)
    spread = (f"mean cosine within classes {within.mean():.3f}, between {between.mean():.3f}"
              if len(within) and len(between) else "")
    axes.set_title(f"{len(sample)} images of {len(classes)} classes, grouped by class{caption}\n{spread}", fontsize=9)
    return _save(figure, path)


def votes_for(labels):
    """How many neighbours vote in the k-NN confusion matrix: the median class size minus one (the
    query's own class can fill them), at most DEFAULT_VOTES, at least 1. Twenty voters would give
    the 2-to-12-image classes of Stanford Online Products an accuracy near 0 at Recall@1 1.0."""
    sizes = np.bincount(np.unique(labels, return_inverse=True)[1])
    return int(np.clip(np.median(sizes) - 1, 1, DEFAULT_VOTES))


def confusion_matrix(features, labels, class_names, path, k=None, max_classes=30, caption=""):
    """Rows: true class, columns: majority vote of the k nearest other images (leave-one-out);
    k from votes_for when None."""
    k = k or votes_for(labels)
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
    # cells of 0.4 inch hold 9-point labels and counts; a small matrix still gets room for its title
    figure = Figure(figsize=(max(6, 2.5 + 0.4 * counts.shape[1]), max(4.5, 2 + 0.4 * counts.shape[0])),
                    layout="constrained")
    axes = figure.add_subplot()
    axes.imshow(counts, cmap="Blues")
    if counts.shape[0] <= 15:
        for (row, column), count in np.ndenumerate(counts):
            axes.text(column, row, count, ha="center", va="center", fontsize=9,
                      color="white" if count > counts.max() / 2 else "black")
    axes.set_xticks(range(counts.shape[1]), names + ["other"] * other, rotation=90, fontsize=9)
    axes.set_yticks(range(len(shown)), names, fontsize=9)
    accuracy = np.mean(predicted == labels)
    subset = f", the {len(shown)} classes with most errors" if other else ""
    axes.set(xlabel=f"majority vote of the k = {k} nearest", ylabel="true class",
             title=f"k-NN classification (k = {k}), accuracy {accuracy:.3f}{subset}{caption}")
    return _save(figure, path)


def _name(class_names, label):
    return str(class_names[label] if class_names is not None else label)


def write_reports(folder, features=None, labels=None, dataset=None, split="test", metrics_csv=None,
                  tsne_points=1000, seed=0, tsne_iterations=1000, network="", selected=None, description="",
                  epoch=None):
    """All the reports the inputs allow, into `folder`; {report name: PNG path}. Without features,
    only the recall curves. `network` says in each title which network the features come from;
    `selected` ({name: epoch}) marks epochs on the recall curves (default: the run's summary.json
    next to metrics_csv), whose training.csv adds the loss curve. The retrieval page also names
    the architecture (`description`, e.g. "resnet50_frozen_normalize, 128-d") and gives the recall of
    metrics.csv's row of `epoch`, else the leave-one-out Recall@1 of the features."""
    os.makedirs(folder, exist_ok=True)
    written = {}
    caption = f" ({network})" if network else ""
    if metrics_csv is not None and os.path.exists(metrics_csv):
        run_folder = os.path.dirname(metrics_csv)
        selected = selected if selected is not None else selected_epochs(os.path.join(run_folder, "summary.json"))
        written["recall_curves"] = recall_curves(metrics_csv, os.path.join(folder, "recall_curves.png"), selected,
                                                 os.path.join(run_folder, "training.csv"))
    if features is not None and len(features) > 1:
        features, labels = np.asarray(features, dtype=np.float32), np.asarray(labels)
        class_names = getattr(dataset, "class_names", None)
        read_image = image_reader(dataset) if dataset is not None else None
        if read_image is not None:
            written[f"retrieval_{split}"] = retrieval_grid(features, labels, read_image,
                                                           os.path.join(folder, f"retrieval_{split}.png"), seed=seed,
                                                           class_names=class_names, caption=caption)
            # HTML, not a PNG: written beside them but not returned (the returned reports are logged as images)
            recall = (recorded_recall(metrics_csv, split, epoch) if epoch is not None else "") or \
                leave_one_out_recall(features, labels)
            network_line = "network: " + ", ".join(part for part in (description, network) if part) + f"; {recall}" \
                if description or network else recall
            retrieval_page(features, labels, dataset, read_image, os.path.join(folder, f"retrieval_page_{split}"),
                           seed=seed, class_names=class_names, caption=caption, network_line=network_line)
        embedding = tsne_embedding(features, tsne_points, seed, tsne_iterations)
        written[f"tsne_{split}"] = tsne(features, labels, os.path.join(folder, f"tsne_{split}.png"), tsne_points,
                                        seed, tsne_iterations, class_names=class_names, caption=caption,
                                        embedding=embedding)
        if read_image is not None:
            written[f"tsne_thumbnails_{split}"] = tsne_thumbnails(
                embedding, labels, read_image, os.path.join(folder, f"tsne_thumbnails_{split}.png"), seed=seed,
                caption=caption)
        written[f"similarity_{split}"] = similarity_matrix(features, labels,
                                                           os.path.join(folder, f"similarity_{split}.png"), seed=seed,
                                                           class_names=class_names, caption=caption)
        written[f"confusion_{split}"] = confusion_matrix(features, labels, class_names,
                                                         os.path.join(folder, f"confusion_{split}.png"),
                                                         caption=caption)
    return {name: path for name, path in written.items() if path is not None}


def selected_epochs(summary_json):
    """{storage metric: its best epoch} of a finished run's summary.json; {} without one."""
    try:
        with open(summary_json) as handle:
            best = json.load(handle).get("best", {})
        return {name: int(record["epoch"]) for name, record in best.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def write_run_reports(folder, evaluated, seed=0, epoch=None, selected=None):
    """The reports of a finished run, into its folder: recall curves from metrics.csv (with the
    `selected` epochs marked), the others of the final network (of `epoch`) on the test split (else
    the last evaluated one). `evaluated`: {split: (features, labels, dataset)}. Kept cheap: a
    shorter t-SNE of at most RUN_TSNE_POINTS embeddings."""
    split = "test" if "test" in evaluated else next(reversed(evaluated), None)
    features, labels, dataset = evaluated[split] if split is not None else (None, None, None)
    network = f"final network, epoch {epoch}" if epoch is not None else ""
    return write_reports(folder, features, labels, dataset, split, os.path.join(folder, "metrics.csv"),
                         RUN_TSNE_POINTS, seed, RUN_TSNE_ITERATIONS, network=network, selected=selected,
                         description=describe(_read_json(os.path.join(folder, "config.json"))), epoch=epoch)


def describe(config):
    """'arch, N-d' of a run's config, "" when it says neither."""
    parts = [str(config["arch"])] if config.get("arch") else []
    return ", ".join(parts + ([f"{config['embed_dim']}-d"] if config.get("embed_dim") else []))


def _read_json(path):
    try:
        with open(path) as handle:
            content = json.load(handle)
        return content if isinstance(content, dict) else {}
    except (OSError, ValueError):
        return {}


def run(opt):
    checkpoint = networks.load(opt.checkpoint, opt.arch, opt.embed_dim)
    config = checkpoint.config
    dataset, source = opt.dataset or config.get("dataset"), opt.source or config.get("source")
    if dataset is None:
        raise UserError(f"{opt.checkpoint} does not name its dataset; pass --dataset and --source")
    splits = datasets.select(dataset, source, augmentation=config.get("augmentation", "base"),
                             use_tv_split=config.get("use_tv_split", False),
                             tv_split_perc=config.get("tv_split_perc", 0.8),
                             tv_split_by_samples=config.get("tv_split_by_samples", False),
                             duplicates=config.get("duplicates", "keep"),  # before the check: kept
                             lists={key: config.get(key) for key in ("train_list", "test_list", "val_list")},
                             **networks.input_preprocessing(checkpoint))
    if opt.split not in splits:
        raise UserError(f"the run of {opt.checkpoint} has no {opt.split} split; choose one of {', '.join(splits)}")
    device = device_of(opt.gpu)
    loader = torch.utils.data.DataLoader(splits[opt.split], batch_size=opt.bs, shuffle=False, num_workers=opt.kernels)
    features, labels = embed(checkpoint.network.to(device), loader, device, description=f"embedding {opt.split}")
    run_folder = os.path.dirname(os.path.abspath(opt.checkpoint))
    out = opt.out or os.path.join(run_folder, os.path.splitext(os.path.basename(opt.checkpoint))[0] + "_reports")
    try:
        network = f"{os.path.basename(opt.checkpoint)}, epoch {checkpoint.epoch}" if checkpoint.epoch is not None \
            else os.path.basename(opt.checkpoint)
        written = write_reports(out, features, labels, splits[opt.split], opt.split,
                                os.path.join(run_folder, "metrics.csv"), opt.tsne_points, network=network,
                                description=describe(config), epoch=checkpoint.epoch)
    except OSError as error:
        raise UserError(f"cannot write {error.filename or out}: {error.strerror}; choose another --out") from None
    for path in written.values():
        print(path)
    return written


def main(argv=None):
    parser = CommandParser(command="python -m evaluation.reports",
                           description="Draw the reports of a checkpoint: retrieval grid, t-SNE, similarity and "
                                       "confusion matrices, and the run's recall and loss curves.")
    add_network_flags(parser)
    parser.add_argument("--dataset", default=None, choices=datasets.names(), help="default: the checkpoint's run's")
    parser.add_argument("--source", default=None, help="default: the checkpoint's run's")
    parser.add_argument("--split", default="test", choices=["test", "val", "train"])
    parser.add_argument("--tsne_points", type=int, default=2000, help="t-SNE of a random sample of this size")
    parser.add_argument("--out", default=None, help="folder of the PNGs (default: <checkpoint>_reports next to it)")
    run_command(run, parser.parse_args(argv))


if __name__ == "__main__":
    main()
