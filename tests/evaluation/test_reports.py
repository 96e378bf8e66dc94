"""The PNG reports, the embedding export and the k-NN classification commands."""
import csv
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import architectures
import datasets
from datasets.image_dataset import ImageDataset
from evaluation import classify, export, networks, reports
from tests.images import write_class_tree


def clustered(n_classes=6, per_class=8, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    features = rng.normal(size=(n_classes, dim))[labels] * 3 + rng.normal(size=(len(labels), dim))
    return features.astype(np.float32), labels


def colours(path):
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    return {tuple(colour) for colour in np.unique(pixels, axis=0)}


def hex_rgb(colour):
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def test_every_report_of_a_run(tmp_path):
    features, labels = clustered()
    features[labels == 5] = features[labels == 4]  # two classes on top of each other: some red borders
    pixels = np.random.default_rng(0).integers(0, 256, (len(labels), 8, 8), dtype=np.uint8)
    dataset = ImageDataset(labels, [f"class {c}" for c in range(6)], pixels=pixels)
    metrics_csv = tmp_path / "metrics.csv"
    metrics_csv.write_text("epoch,split,e_recall@1,e_recall@2,nmi,best_for\n0,test,0.5,0.6,0.3,e_recall@1\n"
                           "1,test,0.7,0.8,0.4,e_recall@1\n")
    written = reports.write_reports(tmp_path / "reports", features, labels, dataset, "test", metrics_csv,
                                    tsne_points=30, tsne_iterations=250)
    assert sorted(written) == ["confusion_test", "recall_curves", "retrieval_test", "similarity_test", "tsne_test",
                               "tsne_thumbnails_test"]
    for path in written.values():
        assert Image.open(path).size[0] > 100
    grid_colours = colours(written["retrieval_test"])
    assert hex_rgb(reports.MATCH) in grid_colours and hex_rgb(reports.MISMATCH) in grid_colours
    # Without images or features only what the inputs allow is drawn.
    assert sorted(reports.write_reports(tmp_path / "only", metrics_csv=metrics_csv)) == ["recall_curves"]


def test_thumbnail_tsne_shows_images_at_the_points_plots_coordinates(tmp_path, monkeypatch):
    features, labels = clustered(per_class=40)
    pixels = np.random.default_rng(0).integers(0, 256, (len(labels), 8, 8), dtype=np.uint8)
    dataset = ImageDataset(labels, [f"class {c}" for c in range(6)], pixels=pixels)
    figures, embeddings, save, embed = {}, [], reports._save, reports.tsne_embedding
    monkeypatch.setattr(reports, "_save", lambda figure, path: save(figures.setdefault(os.path.basename(path),
                                                                                       figure), path))
    monkeypatch.setattr(reports, "tsne_embedding", lambda *args: embeddings.append(embed(*args)) or embeddings[-1])
    written = reports.write_reports(tmp_path, features, labels, dataset, "test", tsne_points=200,
                                    tsne_iterations=250)
    assert len(embeddings) == 1  # one t-SNE for both pictures
    sample, points = embeddings[0]
    assert points.shape == (200, 2) and len(np.unique(labels[sample])) == 6
    width, height = Image.open(written["tsne_thumbnails_test"]).size
    assert 600 <= width <= 1200 and 600 <= height <= 1200

    def rounded(xy):
        return {tuple(np.round(row, 4)) for row in np.asarray(xy, dtype=np.float64).reshape(-1, 2)}

    plotted = set().union(*(rounded(c.get_offsets()) for c in figures["tsne_test.png"].axes[0].collections))
    assert plotted == rounded(points)
    boxes = [artist for artist in figures["tsne_thumbnails_test.png"].axes[0].artists
             if isinstance(artist, reports.AnnotationBbox)]
    assert 5 < len(boxes) <= reports.TSNE_THUMBNAILS and rounded([box.xy for box in boxes]) <= plotted
    frames = {box.patch.get_edgecolor()[:3] for box in boxes}
    assert len(frames) == 6  # one class colour each


def test_run_reports_use_the_test_split(tmp_path):
    features, labels = clustered()
    (tmp_path / "metrics.csv").write_text("epoch,split,e_recall@1\n0,val,0.5\n0,test,0.4\n")
    written = reports.write_run_reports(str(tmp_path), {"val": (features[:5], labels[:5], None),
                                                        "test": (features, labels, None)})
    assert sorted(written) == ["confusion_test", "recall_curves", "similarity_test", "tsne_test"]


def test_confusion_matrix_with_many_classes_keeps_those_with_most_errors(tmp_path, monkeypatch):
    features, labels = clustered(n_classes=40, per_class=3)
    drawn = {}
    monkeypatch.setattr(reports, "_save", lambda figure, path: drawn.setdefault("figure", figure) and path)
    reports.confusion_matrix(features, labels, None, tmp_path / "c.png", k=2, max_classes=5)
    axes = drawn["figure"].axes[0]
    assert len(axes.get_yticklabels()) == 5 and axes.get_xticklabels()[-1].get_text() == "other"


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    """A run's checkpoint on a small generated tree of the folder layout (the test split: 9 images)."""
    tree = write_class_tree(tmp_path_factory.mktemp("data"), [f"class_{c}" for c in range(6)], images_per_class=3)
    torch.manual_seed(0)
    network = architectures.select("resnet18_normalize", 16, pretrained=False)
    path = tmp_path_factory.mktemp("run") / "checkpoint_last.pth"
    torch.save({"network": network.state_dict(), "arch": "resnet18_normalize", "embed_dim": 16, "epoch": 1,
                "config": {"dataset": "folder", "source": str(tree)}}, path)
    return path


def test_report_command_on_a_checkpoint(checkpoint_file, tmp_path):
    (checkpoint_file.parent / "metrics.csv").write_text("epoch,split,e_recall@1\n0,test,0.5\n1,test,0.6\n")
    reports.main(["--checkpoint", str(checkpoint_file), "--kernels", "0"])
    folder = checkpoint_file.parent / "checkpoint_last_reports"
    assert sorted(os.listdir(folder)) == ["confusion_test.png", "recall_curves.png", "retrieval_page_test",
                                          "retrieval_test.png", "similarity_test.png", "tsne_test.png",
                                          "tsne_thumbnails_test.png"]


def test_export_and_classify_image_folders(checkpoint_file, tmp_path):
    reference = write_class_tree(tmp_path / "reference", ["cat", "dog", "owl"], images_per_class=3) / "images"
    queries = tmp_path / "queries"
    for name in ("cat", "owl"):
        shutil.copytree(reference / name, queries / name)  # each query's nearest reference image is itself
    shutil.copy(reference / "dog" / "img_1.jpg", queries / "unlabelled.jpg")

    export.main(["--checkpoint", str(checkpoint_file), "--images", str(queries), "--out", str(tmp_path / "e"),
                 "--kernels", "0"])
    features = np.load(tmp_path / "e.npy")
    with open(tmp_path / "e.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert features.shape == (7, 16) and [row["class"] for row in rows] == ["cat"] * 3 + ["owl"] * 3 + [""]
    checkpoint = networks.load(str(checkpoint_file))
    image = networks.evaluation_transform(checkpoint)(Image.open(rows[4]["path"]).convert("RGB"))
    with torch.no_grad():
        np.testing.assert_allclose(features[4], checkpoint.network(image[None])[0].numpy(), atol=1e-5)

    classify.main(["--checkpoint", str(checkpoint_file), "--reference", str(reference), "--images", str(queries),
                   "--k", "1", "--out", str(tmp_path / "p"), "--kernels", "0"])
    with open(tmp_path / "p.csv") as handle:
        predictions = list(csv.DictReader(handle))
    assert [row["prediction"] for row in predictions] == ["cat"] * 3 + ["owl"] * 3 + ["dog"]
    report = (tmp_path / "p_report.txt").read_text()
    assert "6 labelled images" in report and "owl" in report and "1.00" in report


def test_classify_refuses_an_unlabelled_reference(checkpoint_file, tmp_path, capsys):
    write_class_tree(tmp_path, ["cat"], images_per_class=1)
    shutil.copy(tmp_path / "images" / "cat" / "img_0.jpg", tmp_path / "images" / "loose.jpg")
    with pytest.raises(SystemExit) as stop:
        classify.main(["--checkpoint", str(checkpoint_file), "--reference", str(tmp_path / "images"), "--images",
                       str(tmp_path / "images")])
    assert stop.value.code == 2 and "class folders" in capsys.readouterr().err


def drawn_figures(monkeypatch):
    figures = {}
    monkeypatch.setattr(reports, "_save", lambda figure, path: figures.setdefault(os.path.basename(path), figure)
                        and path)
    return figures


def titles(figure):
    return " ".join([figure._suptitle.get_text() if figure._suptitle else ""]
                    + [axes.get_title() for axes in figure.axes])


def test_reports_say_which_network_and_epoch_they_show(tmp_path, monkeypatch):
    figures = drawn_figures(monkeypatch)
    features, labels = clustered(n_classes=30, per_class=4)
    pixels = np.zeros((len(labels), 8, 8), dtype=np.uint8)
    dataset = ImageDataset(labels, [f"class {c}" for c in range(30)], pixels=pixels)
    (tmp_path / "metrics.csv").write_text("epoch,split,e_recall@1,best_for\n0,test,0.5,\n1,test,0.7,e_recall@1\n"
                                          "2,test,0.6,\n")
    (tmp_path / "training.csv").write_text("epoch,loss,dml,kd\n1,1.0,0.9,0.1\n2,0.8,0.6,0.2\n")
    reports.write_run_reports(str(tmp_path), {"test": (features, labels, dataset)}, epoch=2,
                              selected={"e_recall@1": 1})
    for name in ("retrieval_test.png", "tsne_test.png", "tsne_thumbnails_test.png", "similarity_test.png",
                 "confusion_test.png"):
        assert "(final network, epoch 2)" in titles(figures[name]), name

    curves = figures["recall_curves.png"]
    recall_axes, loss_axes = curves.axes[:2]
    drawn = {line.get_label() for axes in curves.axes for line in axes.get_lines()}
    assert "Training loss" in loss_axes.get_title() and {"loss", "dml", "kd"} <= drawn
    marked = [line for line in recall_axes.get_lines() if list(line.get_xdata()) == [1, 1]]
    assert marked and any("best e_recall@1: epoch 1" in text.get_text() for text in recall_axes.texts)
    assert all(float(tick).is_integer() for tick in recall_axes.get_xticks())

    tsne_legend = [text.get_text() for text in figures["tsne_test.png"].axes[0].get_legend().get_texts()]
    assert tsne_legend[0] == "10 other classes" and len(tsne_legend) == 21  # 20 colours that never repeat

    grid = figures["retrieval_test.png"]
    query_titles = [axes.get_title() for axes in grid.axes[::6]]  # the first column: one query a row
    assert len(query_titles) == 8 and len(set(query_titles)) == 8  # queries of distinct classes


def test_knn_votes_follow_the_class_sizes():
    assert reports.votes_for(np.repeat(np.arange(50), 60)) == 20  # CUB-like classes: 20 voters
    sop_like = np.repeat(np.arange(6), [2, 3, 5, 5, 8, 12])
    assert reports.votes_for(sop_like) == 4  # median class of 5 images: its 4 other images vote
    assert reports.votes_for(np.repeat(np.arange(4), 2)) == 1


def test_report_command_titles_name_the_checkpoint(checkpoint_file, tmp_path, monkeypatch):
    figures = drawn_figures(monkeypatch)
    reports.main(["--checkpoint", str(checkpoint_file), "--kernels", "0", "--out", str(tmp_path)])
    assert "(checkpoint_last.pth, epoch 1)" in titles(figures["tsne_test.png"])


def test_report_command_follows_the_runs_duplicates_policy(tmp_path, monkeypatch):
    """A run that left duplicate images out (--duplicates drop) gets its reports on the same images."""
    tree = write_class_tree(tmp_path / "data", [f"class_{c}" for c in range(4)], images_per_class=3)
    shutil.copy(tree / "images" / "class_3" / "img_0.jpg", tree / "images" / "class_3" / "img_copy.jpg")
    torch.manual_seed(0)
    network = architectures.select("resnet18_normalize", 16, pretrained=False)
    path = tmp_path / "run" / "checkpoint_last.pth"
    path.parent.mkdir()
    torch.save({"network": network.state_dict(), "arch": "resnet18_normalize", "embed_dim": 16, "epoch": 1,
                "config": {"dataset": "folder", "source": str(tree), "duplicates": "drop"}}, path)
    figures = drawn_figures(monkeypatch)
    reports.main(["--checkpoint", str(path), "--kernels", "0", "--out", str(tmp_path / "reports")])
    assert "tsne_test.png" in figures and "similarity_test.png" in figures


@pytest.mark.parametrize("arch, dataset, image_size", [
    ("resnet18_normalize", "digits", 48),  # digits fixes its own crop; --image_size 48 replaces it
    ("timm:vit_tiny_patch16_224_normalize", "folder", None),  # timm's mean and std 0.5, resize 248, bicubic
    ("bninception_normalize", "folder", None),  # BGR, 0-255, the Caffe means
], ids=["digits-at-48", "timm-vit", "bninception"])
def test_report_command_shows_the_images_the_network_was_trained_on(arch, dataset, image_size, tmp_path,
                                                                     monkeypatch):
    """The reports' split goes through the preprocessing of training, Test_pretrained_models.py and the
    export (datasets.dataset_preprocessing under the backbone's input at the run's image size)."""
    source = str(write_class_tree(tmp_path / "data", [f"class_{c}" for c in range(2)])) if dataset == "folder" \
        else None
    network = architectures.select(arch, 16, pretrained=False, image_size=image_size)
    path = tmp_path / "run" / "checkpoint_last.pth"
    path.parent.mkdir()
    torch.save({"network": network.state_dict(), "arch": arch, "embed_dim": 16, "epoch": 1,
                "config": {"dataset": dataset, "source": source, "image_size": image_size}}, path)
    shown = []
    monkeypatch.setattr(reports, "embed", lambda network, loader, device, description: (
        np.zeros((len(loader.dataset), 16), np.float32), loader.dataset.labels))
    monkeypatch.setattr(reports, "write_reports", lambda out, features, labels, split, *args, **kwargs:
                        shown.append(split) or {})
    reports.main(["--checkpoint", str(path), "--kernels", "0", "--out", str(tmp_path / "reports")])
    expected = datasets.select(dataset, source, image_size=image_size,
                               **architectures.preprocessing(arch, image_size))["test"]
    assert torch.equal(shown[0][0][0], expected[0][0])
    if dataset == "digits":
        assert shown[0][0][0].shape == (3, 48, 48)
    else:  # what the export, explain and the index feed the network
        image = Image.open(shown[0].paths[0]).convert("RGB")
        assert torch.equal(shown[0][0][0], networks.evaluation_transform(networks.load(str(path)))(image))
