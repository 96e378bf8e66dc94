"""Test_pretrained_models.py with an evaluation protocol the dataset cannot rank a test split by:
one line naming the protocol that can, before the data or the checkpoint are read (issue 26, item 14:
"not enough values to unpack (expected 1, got 0)")."""
import pytest

import Test_pretrained_models


@pytest.mark.parametrize("protocol", ["self", "train_gallery"])
def test_inshop_with_a_protocol_without_test_split_names_the_one_that_has(protocol, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        Test_pretrained_models.main(["--dataset", "inshop", "--source", str(tmp_path / "absent"), "--checkpoint",
                                     str(tmp_path / "absent.pth"), "--evaluation_protocol", protocol])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: --evaluation_protocol {protocol} needs test images")
    assert "--dataset inshop (its splits: train, query, gallery)" in lines[0]
    assert lines[0].endswith("use --evaluation_protocol query_gallery")
