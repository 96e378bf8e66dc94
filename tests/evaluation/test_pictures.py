"""The pictures a person reads (issue 26, item 18): labels inside their axes and clear of the legend,
each loss term on a scale where it shows, the learning rate drawn, fixed colour scales with their
bars, readable tick labels, small images enlarged, pages that say which network and how well."""
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

import architectures
from datasets.image_dataset import ImageDataset
from evaluation import explain, index, reports, retrieval_page
from tests.images import write_image

TRAINING_CSV = ("epoch,loss,dml,kd,kd_weight,skipped_batches,lr,seconds\n"
                "1,1.46,1.46,0.0,0.0,0,0.0001,4.8\n2,1.73,1.49,0.0095,25.0,0,0.00005,10.4\n"
                "3,1.55,1.53,0.0012,25.0,0,0.00001,15.0\n")
METRICS_CSV = ("epoch,split,e_recall@1,e_recall@2,e_recall@4,e_recall@8,best_for\n0,test,0.87,0.94,0.96,0.98,\n"
               "1,test,0.88,0.93,0.96,0.98,e_recall@1\n2,test,0.91,0.95,0.97,0.98,e_recall@1\n"
               "3,test,0.90,0.95,0.97,0.99,\n")


def drawn(monkeypatch):
    """{file name: figure} of the figures the reports save (saved for real: their layout is done)."""
    figures, save = {}, reports._save
    monkeypatch.setattr(reports, "_save", lambda figure, path: save(figures.setdefault(os.path.basename(path),
                                                                                       figure), path))
    return figures


def extent(artist, figure):
    return artist.get_window_extent(figure.canvas.get_renderer())


def curves(tmp_path, monkeypatch, training_csv=TRAINING_CSV, best_epoch=2):
    figures = drawn(monkeypatch)
    (tmp_path / "metrics.csv").write_text(METRICS_CSV)
    (tmp_path / "training.csv").write_text(training_csv)
    reports.recall_curves(tmp_path / "metrics.csv", tmp_path / "recall_curves.png", {"e_recall@1": best_epoch},
                          tmp_path / "training.csv")
    return figures["recall_curves.png"]


def axes_labelled(figure, label):
    return [axes for axes in figure.axes if label in axes.get_ylabel()]


@pytest.mark.parametrize("best_epoch", [0, 2, 3])
def test_the_best_epoch_label_lies_inside_its_axes_and_clear_of_the_legend(tmp_path, monkeypatch, best_epoch):
    figure = curves(tmp_path, monkeypatch, best_epoch=best_epoch)
    recall_axes = axes_labelled(figure, "recall")[0]
    (label,) = [text for text in recall_axes.texts if "best e_recall@1" in text.get_text()]
    box, inside = extent(label, figure), extent(recall_axes, figure)
    assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
    legend = recall_axes.get_legend() or figure.legends[0]
    assert not box.overlaps(extent(legend, figure))


def test_the_distillation_term_has_its_own_scale_and_only_with_distillation(tmp_path, monkeypatch):
    figure = curves(tmp_path, monkeypatch)
    (dml_axes,) = [axes for axes in figure.axes if "dml" in [line.get_label() for line in axes.get_lines()]]
    (kd_axes,) = [axes for axes in figure.axes if "kd" in [line.get_label() for line in axes.get_lines()]]
    assert kd_axes is not dml_axes
    low, high = kd_axes.get_ylim()
    assert high < 0.05  # a 0.01 term fills its axis instead of lying flat under a 1.5 loss
    without = TRAINING_CSV.replace(",0.0095,25.0,", ",0.0,0.0,").replace(",0.0012,25.0,", ",0.0,0.0,")
    (tmp_path / "plain").mkdir()
    plain = curves(tmp_path / "plain", monkeypatch, without)
    assert not [line for axes in plain.axes for line in axes.get_lines() if line.get_label() == "kd"]


def test_the_learning_rate_is_drawn(tmp_path, monkeypatch):
    figure = curves(tmp_path, monkeypatch)
    (rate_axes,) = axes_labelled(figure, "learning rate")
    (line,) = [line for line in rate_axes.get_lines() if line.get_label() == "lr"]
    assert list(line.get_ydata()) == [0.0001, 0.00005, 0.00001]


def collapsed(n_classes=5, per_class=5):
    """Embeddings that all point almost one way: cosine similarities 0.97 to 1."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(n_classes), per_class)
    features = np.ones((len(labels), 16)) * 10 + rng.normal(size=(len(labels), 16))
    return features.astype(np.float32), labels


def test_the_similarity_scale_is_fixed_so_that_a_collapse_shows(tmp_path, monkeypatch):
    figures = drawn(monkeypatch)
    features, labels = collapsed()
    reports.similarity_matrix(features, labels, tmp_path / "similarity.png")
    figure = figures["similarity.png"]
    image = figure.axes[0].get_images()[0]
    assert image.get_clim() == (-1, 1)
    assert any("cosine similarity" in axes.get_ylabel() for axes in figure.axes[1:])  # the colour bar
    assert re.search(r"within classes 0\.9\d+, between 0\.9\d+", figure.axes[0].get_title())


def test_confusion_tick_labels_are_readable(tmp_path, monkeypatch):
    figures = drawn(monkeypatch)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 20)
    features = (rng.normal(size=(5, 8))[labels] * 3 + rng.normal(size=(100, 8))).astype(np.float32)
    reports.confusion_matrix(features, labels, None, tmp_path / "confusion.png")
    axes = figures["confusion.png"].axes[0]
    assert min(label.get_fontsize() for label in axes.get_xticklabels() + axes.get_yticklabels()) >= 9


def test_small_images_are_enlarged_on_the_pages(tmp_path):
    small = tmp_path / "digit.png"
    write_image(small, size=(8, 8))
    rows = [retrieval_page.QueryRow(retrieval_page.Picture(small, "query"),
                                    [retrieval_page.Picture(Image.new("L", (8, 8), 128), "1")])]
    retrieval_page.write_page(tmp_path / "page", rows)
    for thumbnail in (tmp_path / "page" / "thumbnails").iterdir():
        with Image.open(thumbnail) as image:
            assert min(image.size) >= 64, image.size


def test_the_run_page_names_the_network_and_its_recall(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 4)
    features = (rng.normal(size=(5, 8))[labels] * 3 + rng.normal(size=(20, 8))).astype(np.float32)
    dataset = ImageDataset(labels, [f"c{c}" for c in range(5)], pixels=rng.integers(0, 256, (20, 8, 8), np.uint8))
    (tmp_path / "metrics.csv").write_text(METRICS_CSV)
    (tmp_path / "config.json").write_text('{"arch": "resnet18_frozen_normalize", "embed_dim": 16}')
    reports.write_run_reports(str(tmp_path), {"test": (features, labels, dataset)}, epoch=3)
    page = (tmp_path / "retrieval_page_test" / "index.html").read_text()
    assert "resnet18_frozen_normalize, 16-d, final network, epoch 3" in page
    assert "test Recall@1 0.9000" in page  # metrics.csv's row of that epoch


def test_the_index_page_shows_the_classes_in_turn(tmp_path):
    paths, classes = [], []
    for name in ("a", "b", "c"):
        for number in range(3):
            paths.append(str(tmp_path / "queries" / name / f"{number}.png"))
            write_image(tmp_path / "queries" / name / f"{number}.png", size=(16, 16), seed=number)
            classes.append(name)
    meta = {"classes": classes, "paths": paths, "images": str(tmp_path / "queries"), "checkpoint": "c.pth",
            "arch": "resnet18", "embed_dim": 8, "count": 9, "kind": "flat"}
    found = np.tile(np.arange(2), (9, 1))
    explained = []
    index.write_results_page(tmp_path / "page", paths, classes, str(tmp_path / "queries"), np.zeros((9, 2)), found,
                             meta, explain=lambda query, _: explained.append(query) or (Image.new("RGB", (8, 8)),) * 2
                             + (0.5,), explained=3)
    page = (tmp_path / "page" / "index.html").read_text()
    queries = re.findall(r'<figure class="q">.*?title="([^"]+)"', page)
    assert [name.split(os.sep)[0] for name in queries] == ["a", "b", "c"] * 3
    assert [os.path.relpath(path, tmp_path / "queries").split(os.sep)[0] for path in explained] == ["a", "b", "c"]


def test_explanations_share_one_scale_and_show_it(tmp_path, monkeypatch):
    torch.manual_seed(0)
    network = architectures.select("resnet18", 8, pretrained=False).eval()
    query, retrieved = torch.randn(3, 64, 64), torch.randn(3, 64, 64)
    map_q, map_r = explain.similarity_maps(network, query, retrieved)
    alone_q, alone_r = (explain.heat_map(raw, (64, 64)) for raw in explain.contributions(network, query, retrieved)[:2])
    # one scale: the larger peak is 1, and the other map keeps its size relative to it
    assert max(map_q.max(), map_r.max()) == pytest.approx(1) and min(map_q.max(), map_r.max()) < 0.99
    assert alone_q.max() == pytest.approx(1) and alone_r.max() == pytest.approx(1)  # each alone: its own scale
    ratio = map_q / np.maximum(alone_q, 1e-12)
    assert np.allclose(ratio[alone_q > 0.01], ratio[alone_q > 0.01].mean(), rtol=1e-4)
    peak = 0.25
    shown = Image.new("RGB", (32, 32), "white")
    result = explain.Explanation(shown, shown, 0.5, peak, (1, 1))
    path = explain.pair_figure(result, ("query q.png", "retrieved r.png"), tmp_path / "pair.png")
    with Image.open(path) as picture:
        assert picture.size[0] > 500
    figure = explain.draw_pair(result, ("query q.png", "retrieved r.png"))
    assert any("share of the similarity" in axes.get_xlabel() + axes.get_ylabel() for axes in figure.axes)
    assert "1 x 1" in figure._suptitle.get_text()  # a map with no spatial detail says so
