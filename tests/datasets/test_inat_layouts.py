"""iNaturalist 2018 in both layouts of the Smooth-AP split: the split files beside train_val2018/, or
in Inat_dataset_splits/ as Smooth-AP's code and pytorch-metric-learning's INaturalist2018 read them
(issue 26: "no inat2018 layout"). Both load through main.py's data path and train."""
import pytest

import datasets
import parameters
from datasets import verify
from tests.images import write_image
from tests.program import run_main
from training.folder import read_csv


def write_inat(root, lists_folder="."):
    """train_val2018/<kingdom>/<species>/ of two training and two test species, two images each (no
    two alike), and the split files in root/`lists_folder`, one path relative to root a line."""
    splits = {"Inaturalist_train_set1.txt": ["Plantae/7477", "Aves/2101"],
              "Inaturalist_test_set1.txt": ["Fungi/913", "Insecta/3205"]}
    (root / lists_folder).mkdir(parents=True, exist_ok=True)
    seed = 0
    for list_name, species in splits.items():
        lines = []
        for folder in species:
            for image in range(2):
                seed += 1
                path = f"train_val2018/{folder}/{seed:02d}a6f.jpg"
                write_image(root / path, seed=seed)
                lines.append(path)
        (root / lists_folder / list_name).write_text("\n".join(lines) + "\n")
    return root


def splits_folder_layout(root):
    """Smooth-AP's and pytorch-metric-learning's layout: <root>/Inat_dataset_splits/Inaturalist_*_set1.txt."""
    return write_inat(root, "Inat_dataset_splits")


LAYOUTS = {"beside": write_inat, "splits_folder": splits_folder_layout}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_both_layouts_load_the_same_splits_through_mains_data_path(layout, tmp_path):
    root = LAYOUTS[layout](tmp_path / "inat2018")
    settings = parameters.parse(["--dataset", "inat2018", "--source", str(tmp_path)])  # the parent works too
    splits = datasets.load(settings.data, **settings.model.preprocessing())
    assert {split: (len(data), data.n_classes) for split, data in splits.items()} == {"train": (4, 2), "test": (4, 2)}
    assert splits["train"].class_names == ["train_val2018/Aves/2101", "train_val2018/Plantae/7477"]
    assert all(path.startswith(str(root / "train_val2018")) for path in splits["test"].paths)
    assert splits["test"].listed_in.endswith(("Inat_dataset_splits/" if layout == "splits_folder" else "inat2018/")
                                             + "Inaturalist_test_set1.txt")


def test_the_splits_folder_layout_trains_an_epoch(tmp_path, capsys):
    splits_folder_layout(tmp_path / "inat2018")
    status = run_main(["--dataset", "inat2018", "--source", tmp_path / "inat2018", "--not_pretrained", "--arch",
                       "resnet18", "--embed_dim", "8", "--bs", "4", "--n_epochs", "1", "--kernels", "0", "--no_reports",
                       "--save_checkpoints", "none", "--save_path", tmp_path / "runs", "--savename", "run"])
    assert status == 0, capsys.readouterr().err
    rows = read_csv(tmp_path / "runs" / "run" / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["0", "1"] and all(0 <= float(row["e_recall@1"]) <= 1 for row in rows)


def test_verify_compares_the_published_image_counts(tmp_path, capsys):
    splits_folder_layout(tmp_path / "inat2018")
    with pytest.raises(SystemExit) as stop:
        verify.main(["--dataset", "inat2018", "--source", str(tmp_path / "inat2018"), "--kernels", "0"])
    out = capsys.readouterr().out
    assert stop.value.code == 1
    assert "4 images, 325,846 published; 2 classes, 5,690 published" in out
    assert "4 images, 136,093 published; 2 classes, 2,452 published" in out
