"""The image index (evaluation.index), the retrieval page and its screenshot."""
import csv
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import architectures
from datasets.image_dataset import ImageDataset
from evaluation import explain, export, index, networks, reports, retrieval_page, screenshot
from tests.images import write_class_tree, write_image

CLASSES = [f"class_{c}" for c in range(4)]


def save_checkpoint(path, seed=0, embed_dim=16):
    torch.manual_seed(seed)
    arch = "resnet18_frozen_normalize"
    network = architectures.select(arch, embed_dim, pretrained=False)
    torch.save({"network": network.state_dict(), "arch": arch, "embed_dim": embed_dim, "epoch": 0, "config": {}},
               path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A gallery of 4 classes x 3 images, queries of the same classes (other images), a checkpoint,
    and its flat index built through main()."""
    root = tmp_path_factory.mktemp("index")
    gallery = write_class_tree(root / "gallery", CLASSES, 3) / "images"
    queries = root / "queries"
    for number, name in enumerate(CLASSES):
        write_image(queries / name / f"q{number}.png", seed=100 + number)
    checkpoint = save_checkpoint(root / "checkpoint.pth")
    index.main(["build", "--checkpoint", str(checkpoint), "--images", str(gallery), "--out", str(root / "index"),
                "--kernels", "0"])
    return root, gallery, queries, checkpoint


def exact_knn(queries, gallery, k):
    """(euclidean distances, indices) by numpy in float64, ties by lower index."""
    distances = np.sqrt(((queries[:, None, :].astype(np.float64) - gallery[None].astype(np.float64)) ** 2).sum(-1))
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, 1), order


def test_flat_search_equals_exact_knn():
    rng = np.random.default_rng(0)
    gallery, queries = rng.normal(size=(500, 24)).astype(np.float32), rng.normal(size=(40, 24)).astype(np.float32)
    flat = index.index_batches(np.array_split(gallery, 7), 24)  # added batch by batch
    distances, found = index.search_index(flat, queries, 10)
    expected_distances, expected = exact_knn(queries, gallery, 10)
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-4, atol=1e-5)


def test_approximate_indexes_keep_the_recall_of_the_exact_one():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, 64)) * 4
    members = rng.integers(0, 200, 21000)
    vectors = (centres[members] + rng.normal(size=(21000, 64))).astype(np.float32)
    gallery, queries = vectors[:20000], vectors[20000:]
    _, exact = index.search_index(index.index_batches(np.array_split(gallery, 10), 64), queries, 10)
    for kind in ("ivf", "hnsw"):
        approximate = index.index_batches(np.array_split(gallery, 10), 64, kind, nlist=100, hnsw_m=16,
                                          training=gallery[rng.permutation(20000)[:5000]])
        _, found = index.search_index(approximate, queries, 10, nprobe=16, ef_search=64)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])
        assert recall >= 0.95, (kind, recall)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_build_and_search_write_the_nearest_and_the_recall(setup, tmp_path, capsys):
    root, gallery, queries, checkpoint = setup
    meta = json.loads((root / "index" / index.META_FILE).read_text())
    assert sorted(path.name for path in (root / "index").iterdir()) == [index.INDEX_FILE, index.META_FILE]
    assert (meta["kind"], meta["embed_dim"], meta["arch"], meta["count"]) == ("flat", 16, "resnet18_frozen_normalize",
                                                                              12)
    assert meta["classes"] == [name for name in CLASSES for _ in range(3)]
    index.main(["search", "--index", str(root / "index"), "--images", str(queries), "--k", "3",
                "--out", str(tmp_path / "results.csv"), "--html", str(tmp_path / "page"), "--kernels", "0"])
    rows = read_csv(tmp_path / "results.csv")
    # the same, by hand: the embeddings of evaluation.export and an exact search in float64
    network = networks.load(str(checkpoint))
    gallery_paths, gallery_classes = export.find_images(str(gallery))
    query_paths, query_classes = export.find_images(str(queries))
    distances, expected = exact_knn(export.embed_images(network, query_paths, "cpu"),
                                    export.embed_images(network, gallery_paths, "cpu"), 3)
    assert [(row["query"], int(row["rank"])) for row in rows] == [(path, rank) for path in query_paths
                                                                  for rank in (1, 2, 3)]
    assert [row["gallery"] for row in rows] == [gallery_paths[j] for j in expected.ravel()]
    np.testing.assert_allclose([float(row["distance"]) for row in rows], distances.ravel(), rtol=1e-3, atol=1e-5)
    matches = np.array([[gallery_classes[j] == name for j in row] for name, row in zip(query_classes, expected)])
    assert [row["match"] for row in rows] == [str(int(match)) for match in matches.ravel()]
    scores = json.loads((tmp_path / "results.json").read_text())
    assert scores["recall@1"] == pytest.approx(matches[:, 0].mean())
    assert scores["recall@3"] == pytest.approx(matches.any(1).mean())
    assert f"recall@1 {matches[:, 0].mean():.4f}" in capsys.readouterr().out

    # the page: the queries in order, each with its results' thumbnails, bordered by class
    page = (tmp_path / "page" / "index.html").read_text()
    sections = re.findall(r"<section>(.*?)</section>", page, re.S)
    assert len(sections) == len(query_paths)
    for section, path, query_class, row_matches in zip(sections, query_paths, query_classes, matches):
        figures = re.findall(r'<figure class="(\w)"><img src="([^"]+)"[^>]*title="([^"]+)"', section)
        assert [kind for kind, _, _ in figures] == ["q"] + ["m" if match else "x" for match in row_matches]
        assert figures[0][2] == f"{query_class}/{path.rsplit('/', 1)[1]}"
        assert query_class in section
    thumbnails = set(re.findall(r'src="(thumbnails/[^"]+\.jpg)"', page))
    assert len(thumbnails) == len(set(query_paths) | {gallery_paths[j] for j in expected.ravel()})
    for name in thumbnails:
        with Image.open(tmp_path / "page" / name) as image:
            assert image.format == "JPEG" and max(image.size) <= retrieval_page.THUMBNAIL
    assert str(tmp_path) not in page and str(root) not in page and "http" not in page and "<script" not in page
    assert not re.search(r'(src|href)="(/|file:)', page)


def test_the_page_escapes_names_and_shows_extra_pictures(tmp_path):
    image = tmp_path / "a <b>.png"
    write_image(image, size=(300, 200))
    overlay = Image.new("RGB", (64, 64), "yellow")
    rows = [retrieval_page.QueryRow(retrieval_page.Picture(image, "query", "<cls>"),
                                    [retrieval_page.Picture(image, "1", None, 0.5, None)],
                                    [retrieval_page.Picture(overlay, "heat-map & co")])]
    path = retrieval_page.write_page(tmp_path / "page", rows, title="t <x>")
    page = open(path).read()
    assert "<cls>" not in page and "&lt;cls&gt;" in page and "heat-map &amp; co" in page and "t &lt;x&gt;" in page
    assert re.findall(r'<figure class="(\w)"', page) == ["q", "u", "e"]
    files = sorted(p.name for p in (tmp_path / "page" / "thumbnails").iterdir())
    assert len(files) == 2  # one per distinct image
    assert max(Image.open(tmp_path / "page" / "thumbnails" / files[0]).size) <= 128


def test_search_puts_the_heat_maps_of_the_first_queries_on_the_page(setup, tmp_path):
    root, gallery, queries, checkpoint = setup
    index.main(["search", "--index", str(root / "index"), "--images", str(queries), "--k", "2",
                "--out", str(tmp_path / "results.csv"), "--html", str(tmp_path / "page"), "--explain", "2",
                "--kernels", "0"])
    sections = re.findall(r"<section>(.*?)</section>", (tmp_path / "page" / "index.html").read_text(), re.S)
    kinds = [re.findall(r'<figure class="(\w)"', section) for section in sections]
    assert [row.count("e") for row in kinds] == [2, 2, 0, 0]  # the query's map and its nearest image's
    first = read_csv(tmp_path / "results.csv")[0]
    expected, _, _ = explain.explain_pair(str(checkpoint), first["query"], first["gallery"])
    name = re.findall(r'<figure class="e"><img src="([^"]+)"', sections[0])[0]
    with Image.open(tmp_path / "page" / name) as thumbnail:
        shrunk = expected.copy()
        shrunk.thumbnail(thumbnail.size)
        assert np.abs(np.asarray(thumbnail, float) - np.asarray(shrunk, float)).mean() < 8  # JPEG rounding


def test_run_reports_include_the_page(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 4)
    features = (rng.normal(size=(5, 8))[labels] * 3 + rng.normal(size=(20, 8))).astype(np.float32)
    dataset = ImageDataset(labels, [f"c{c}" for c in range(5)],
                           pixels=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8))
    reports.retrieval_page(features, labels, dataset, reports.image_reader(dataset), tmp_path / "page",
                           n_queries=7, k=3, class_names=dataset.class_names)
    page = (tmp_path / "page" / "index.html").read_text()
    sections = re.findall(r"<section>(.*?)</section>", page, re.S)
    assert len(sections) == 7  # 5 distinct classes, then 2 more images
    assert all(len(re.findall("<figure", section)) == 4 for section in sections)


def one_error_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        index.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_bad_input_is_one_line(setup, tmp_path, capsys):
    root, gallery, queries, checkpoint = setup
    search = ["search", "--index", str(root / "index"), "--kernels", "0", "--out", str(tmp_path / "r.csv")]
    other = save_checkpoint(tmp_path / "other.pth", seed=1)
    wider = save_checkpoint(tmp_path / "wider.pth", embed_dim=8)
    assert "built by another network" in one_error_line(search + ["--images", str(queries), "--checkpoint", str(other)],
                                                        capsys)
    assert "embeds in 8 dimensions" in one_error_line(search + ["--images", str(queries), "--checkpoint", str(wider)],
                                                      capsys)
    (tmp_path / "empty").mkdir()
    assert "no images" in one_error_line(search + ["--images", str(tmp_path / "empty")], capsys)
    assert "no folder" in one_error_line(search + ["--images", str(tmp_path / "nothing")], capsys)
    (tmp_path / "broken" / "a").mkdir(parents=True)
    (tmp_path / "broken" / "a" / "x.jpg").write_text("not an image")
    err = one_error_line(search + ["--images", str(tmp_path / "broken")], capsys)
    assert "x.jpg" in err and "--on_bad_image" not in err
    assert "is not an index" in one_error_line(["search", "--index", str(tmp_path / "empty"), "--images",
                                                str(queries)], capsys)
    assert "--k must be at least 1" in one_error_line(search + ["--images", str(queries), "--k", "0"], capsys)
    assert "add --html FOLDER" in one_error_line(search + ["--images", str(queries), "--explain", "3"], capsys)
    (tmp_path / "fake.pth").write_text("no checkpoint")
    one_error_line(["build", "--checkpoint", str(tmp_path / "fake.pth"), "--images", str(gallery), "--out",
                    str(tmp_path / "i")], capsys)
    one_error_line(["build", "--checkpoint", str(checkpoint), "--images", str(gallery), "--out", str(tmp_path / "i"),
                    "--index", "lsh"], capsys)


@pytest.mark.skipif(screenshot.browser() is None, reason="no chromium installed (apt-get install chromium)")
def test_screenshot_of_a_page(tmp_path):
    image = tmp_path / "a.png"
    write_image(image, size=(100, 80))
    rows = [retrieval_page.QueryRow(retrieval_page.Picture(image, "query", "a"),
                                    [retrieval_page.Picture(image, "1", "a", 0.0, True)])]
    page = retrieval_page.write_page(tmp_path / "page", rows)
    png = screenshot.screenshot(page, tmp_path / "shot.png", 640, 480)
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.float64)
    assert pixels.shape == (480, 640, 3) and pixels.var() > 0
    green = np.all(np.abs(pixels - [0x1a, 0x98, 0x50]) < 8, axis=-1)
    assert green.sum() > 100  # the match's border was drawn


def test_screenshot_without_a_browser_says_how_to_install_one(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(screenshot, "browser", lambda: None)
    with pytest.raises(SystemExit) as exit_info:
        screenshot.main([str(tmp_path / "page.html"), "--out", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2 and "apt-get install chromium" in capsys.readouterr().err


def test_labelled_queries_against_an_unlabelled_index_say_it_has_no_classes(setup, tmp_path, capsys):
    """Issue 26: images directly in the gallery folder have no class; recall@1 0.0000 was printed."""
    root, gallery, queries, checkpoint = setup
    for number in range(3):
        write_image(tmp_path / "loose" / f"g{number}.png", seed=200 + number)
    index.main(["build", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "loose"), "--out",
                str(tmp_path / "index"), "--kernels", "0"])
    capsys.readouterr()
    *_, scores = index.main(["search", "--index", str(tmp_path / "index"), "--images", str(queries), "--k", "2",
                             "--out", str(tmp_path / "r.csv"), "--kernels", "0"])
    out, err = capsys.readouterr()
    assert scores is None and "recall" not in out and not (tmp_path / "r.json").exists()
    assert "the indexed images have no classes" in err and err.count("\n") == 1
    assert len(read_csv(tmp_path / "r.csv")) == 2 * len(CLASSES)


def test_an_index_whose_checkpoint_file_changed_says_so(setup, tmp_path, capsys):
    """Issue 26: without --checkpoint the message said "another network (X) than X ... drop --checkpoint"."""
    root, gallery, queries, _ = setup
    checkpoint = save_checkpoint(tmp_path / "net.pth")
    index.main(["build", "--checkpoint", str(checkpoint), "--images", str(gallery), "--out", str(tmp_path / "index"),
                "--kernels", "0"])
    save_checkpoint(checkpoint, seed=1)  # trained further, or overwritten by another run
    err = one_error_line(["search", "--index", str(tmp_path / "index"), "--images", str(queries), "--kernels", "0",
                          "--out", str(tmp_path / "r.csv")], capsys)
    assert f"{checkpoint} has changed since index {tmp_path / 'index'} was built" in err
    assert "drop --checkpoint" not in err and "than" not in err
    assert f"build --checkpoint {checkpoint}" in err and "--checkpoint FILE" in err
