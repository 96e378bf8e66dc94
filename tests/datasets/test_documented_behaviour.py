"""What docs/flags.md and docs/datasets.md say, held (issue 26, item 17): --image_size on digits,
verify's heading for list files and for digits, In-Shop's partition named a file, the warm-up rule."""
import pytest

import datasets
import parameters
from datasets import verify
from errors import UserError
from tests.images import write_lists
from training.optimisation import warmup_cosine


def test_image_size_sets_the_crop_on_digits_too():
    # digits fixes a 32-pixel crop for its 8x8 images; --image_size used to be ignored there
    settings = parameters.parse(["--dataset", "digits", "--image_size", "48"])
    train = datasets.load(settings.data, **settings.model.preprocessing())["train"]
    assert tuple(train[0][0].shape) == (3, 48, 48)
    default = parameters.parse(["--dataset", "digits"])
    assert tuple(datasets.load(default.data, **default.model.preprocessing())["test"][0][0].shape) == (3, 32, 32)


def test_verify_of_list_files_names_them(tmp_path, capsys):
    write_lists(tmp_path)
    with pytest.raises(SystemExit):
        verify.main(["--dataset", "list", "--train_list", str(tmp_path / "CUB200_train.txt"), "--test_list",
                     str(tmp_path / "CUB200_val.txt"), "--kernels", "0", "--partial"])
    heading = capsys.readouterr().out.splitlines()[0]
    assert "None" not in heading
    assert heading == f"list of {tmp_path / 'CUB200_train.txt'}, {tmp_path / 'CUB200_val.txt'}:"


def test_verify_of_digits_names_no_folder(capsys):
    # digits reads no folder: its heading used to be "digits at None:"
    with pytest.raises(SystemExit):
        verify.main(["--dataset", "digits", "--kernels", "0"])
    assert capsys.readouterr().out.splitlines()[0] == "digits:"


def test_inshop_partition_is_called_a_file(tmp_path):
    (tmp_path / "img").mkdir()
    with pytest.raises(UserError, match=r"^no Eval/list_eval_partition.txt file for inshop \(tried "):
        datasets.select("inshop", str(tmp_path))


def test_warmup_gives_step_s_the_rate_lr_times_s_plus_1_over_w():
    # as docs/flags.md says: timm's warm-up gives s / W, one step behind; both reach 1 at step W
    assert [warmup_cosine(step, 4, 100) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(4, 4, 100) == 1.0


def test_samples_per_class_above_the_largest_class_refused_by_m_per_class_only():
    import numpy as np

    import datasampler
    from datasampler import BatchSettings

    labels = np.repeat(np.arange(6), 3)  # classes of 3 images, groups of 4
    datasampler.batches(BatchSettings(8, 4, "class_random"), labels, 0)  # with replacement: accepted
    with pytest.raises(UserError, match="samples_per_class 4 is above the largest training class"):
        datasampler.batches(BatchSettings(8, 4, "m_per_class"), labels, 0)
