"""--config FILE (YAML or JSON flag values, overridden by the command line) and --init_from PATH."""
import csv
import json

import pytest
import torch

import architectures
import parameters
import training
from evaluation import networks
from tests import program

DIGITS = ["--dataset", "digits", "--arch", "resnet18_frozen_normalize", "--not_pretrained", "--embed_dim", "16",
          "--bs", "50", "--samples_per_class", "10", "--lr", "1e-4", "--kernels", "0", "--n_epochs", "1",
          "--no_reports"]


def parse_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parameters.parse(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def command_error(argv, capsys):
    assert program.run_main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_yaml_values_and_command_line_overrides(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("dataset: cars196\nlr: 1e-5\nkd_lambda: 200\nPSD: true\nOBDP: true\ntau: [200, 250]\n"
                      "gpu: 1\narch: resnet50_frozen_normalize_double\nloss_margin_beta_constant: true\n"
                      "evaluation_metrics: [e_recall@1, nmi]\n")
    settings = parameters.parse(["--config", str(config), "--kd_lambda", "75", "--tau", "10", "--loss", "margin"])
    assert (settings.data.dataset, settings.optimisation.lr, settings.distillation.PSD, settings.distillation.OBDP,
            settings.training.gpu, settings.model.arch, settings.loss.hyperparameters["beta_constant"]) == \
        ("cars196", 1e-5, True, True, (1,), "resnet50_frozen_normalize_double", True)
    assert (settings.distillation.kd_lambda, settings.optimisation.tau) == (75.0, (10,))
    assert settings.evaluation.evaluation_metrics == ("e_recall@1", "nmi")
    assert "config" not in training.to_record(settings)


def test_a_config_includes_recipes_and_states_what_differs(tmp_path, capsys):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "recipe.yaml").write_text("bs: 56\nlr: 3.0e-5\nembed_dim: 64\n")
    (tmp_path / "recipes" / "data.yaml").write_text("include: recipe.yaml\ndataset: cars196\nlr: 1.0e-4\n")
    (tmp_path / "run.yaml").write_text("include: [recipes/data.yaml]\nembed_dim: 32\n")
    settings = parameters.parse(["--config", str(tmp_path / "run.yaml"), "--bs", "28"])
    # the including file wins over what it includes, the command line over every file
    assert (settings.batches.bs, settings.optimisation.lr, settings.model.embed_dim, settings.data.dataset) == \
        (28, 1e-4, 32, "cars196")
    (tmp_path / "recipes" / "recipe.yaml").write_text("include: data.yaml\n")
    error = parse_error(["--config", str(tmp_path / "run.yaml")], capsys)
    assert "includes data.yaml, which includes it again" in error
    (tmp_path / "loop.yaml").write_text("include: [recipes/missing.yaml]\n")
    assert "missing.yaml: cannot read it" in parse_error(["--config", str(tmp_path / "loop.yaml")], capsys)


def test_a_saved_config_loads_back_to_the_same_flags(tmp_path):
    settings = parameters.parse(["--dataset", "online_products", "--gpu", "0", "1", "--tau", "70", "100", "--PSD",
                                 "--OBDP", "--diffusion_k", "5", "--diffusion_norm", "symmetric", "--diffusion_solver",
                                 "cg", "--diffusion_iters", "50", "--loss", "margin_obd_sd", "--batch_mining",
                                 "semihard", "--savename", "-odd name", "--resume", "", "--fc_lr", "-1",
                                 "--storage_metrics", "nmi", "--evaluation_diffusion", "--evaluation_diffusion_w",
                                 "0.9"])
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps(training.to_record(settings)))  # what a run writes
    assert parameters.parse(["--config", str(saved)]) == settings
    assert training.from_record(json.loads(saved.read_text())) == settings
    # A resumed run started from the file compares equal to one given the same flags on the command line.
    assert training.differences(json.loads(saved.read_text()), training.to_record(settings)) == {}


def test_a_record_written_before_the_settings_resumes_alike():
    # A config.json of the version before typed settings: every flag, every loss's hyperparameters,
    # a null protocol (the dataset's), an integer for a float flag.
    old = json.loads(json.dumps(vars(parameters.build_parser().parse_args(
        ["--dataset", "digits", "--loss", "margin", "--PSD", "--OBDP", "--kd_lambda", "1000"]))))
    del old["config"]
    old |= {"evaluation_metrics": ["e_recall@1", "e_recall@2", "e_recall@4", "e_recall@8", "nmi"],
            "evaluation_protocol": None, "kd_lambda": 1000, "loss_triplet_margin": 0.5}
    settings = training.from_record(old)
    assert settings == parameters.parse(["--dataset", "digits", "--loss", "margin", "--PSD", "--OBDP",
                                         "--kd_lambda", "1000"])
    # another loss's hyperparameter does not change the run; its own does
    assert training.differences(old, training.to_record(settings)) == {}
    changed = training.to_record(settings) | {"loss_margin_beta": 1.0}
    assert training.differences(old, changed) == {"loss_margin_beta": (1.2, 1.0)}


@pytest.mark.parametrize("name,content,fragments", [
    ("run.yaml", "bs: 112\nbatch_size: 3\nconfig: other.yaml\n", ["unknown key(s) batch_size, config"]),
    ("run.yaml", "bs: abc\n", ["argument --bs: invalid int value: 'abc'"]),
    ("run.yaml", "bs: 1.5\n", ["--bs: invalid int value: '1.5'"]),
    ("run.yaml", "n_epochs: true\n", ["--n_epochs takes one plain value"]),
    ("run.yaml", "PSD: 'yes'\n", ["--PSD is a switch, its value must be true or false"]),
    ("run.yaml", "lr: null\n", ["null is not a value of --lr"]),
    ("run.yaml", "tau: {a: 1}\n", ["--tau takes a list of plain values"]),
    ("run.yaml", "optim: lamb\n", ["--optim: invalid choice: 'lamb'"]),
    ("run.yaml", "bs: 111\n", ["--bs 111 is not a multiple of --samples_per_class 2"]),
    ("run.yaml", "- bs\n- 112\n", ["holds a list, not a mapping"]),
    ("run.yaml", "bs: [112\n", ["is not valid YAML"]),
    ("run.json", '{"bs": 112,}', ["is not valid JSON"]),
    ("run.toml", "bs = 112\n", ["must end in .yaml, .yml or .json"]),
])
def test_bad_config_files_are_argparse_errors(tmp_path, capsys, name, content, fragments):
    path = tmp_path / name
    path.write_text(content)
    error = parse_error(["--config", str(path)], capsys)
    assert all(fragment in error for fragment in fragments), error
    if "samples_per_class" not in error:
        assert str(path) in error


def test_a_missing_config_file(tmp_path, capsys):
    error = parse_error(["--config", str(tmp_path / "none.yaml")], capsys)
    assert "none.yaml: cannot read it (No such file or directory)" in error


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, one_thread):
    """A one-epoch MS run on digits."""
    save_path = tmp_path_factory.mktemp("runs")
    assert program.run_main(DIGITS + ["--save_path", str(save_path), "--savename", "source"]) == 0
    return save_path / "source"


def test_a_run_config_json_loads_back(source_run):
    saved = json.loads((source_run / "config.json").read_text())
    # the machine's facts are recorded beside the settings, not read back as settings
    assert set(saved.pop("environment")) >= {"torch", "threads"}
    assert training.to_record(parameters.parse(["--config", str(source_run / "config.json")])) == saved


def test_finetuning_with_another_criterion_starts_from_the_checkpoint(source_run, tmp_path, one_thread, offline):
    checkpoint = source_run / "checkpoint_last.pth"
    # No --not_pretrained: the ImageNet weights, absent here, are not needed under --init_from.
    flags = [flag for flag in DIGITS if flag != "--not_pretrained"]
    assert program.run_main(flags + ["--init_from", str(checkpoint), "--loss", "margin", "--save_path", str(tmp_path),
                                     "--savename", "finetune"]) == 0
    source_rows = read_csv(source_run / "metrics.csv")
    finetune_rows = read_csv(tmp_path / "finetune" / "metrics.csv")
    # Before any finetuning step the network is the source's network after its last epoch.
    assert finetune_rows[0]["epoch"] == "0" and source_rows[-1]["epoch"] == "1"
    assert finetune_rows[0]["e_recall@1"] == source_rows[-1]["e_recall@1"]
    assert float(finetune_rows[0]["nmi"]) == pytest.approx(float(source_rows[-1]["nmi"]), abs=1e-6)
    assert source_rows[0]["e_recall@1"] != source_rows[-1]["e_recall@1"]  # the source did learn something
    assert [row["epoch"] for row in finetune_rows] == ["0", "1"]
    config = json.loads((tmp_path / "finetune" / "config.json").read_text())
    assert (config["init_from"], config["loss"]) == (str(checkpoint), "margin")
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1  # the source checkpoint is untouched


def test_a_published_state_dict_initialises_too(source_run, tmp_path):
    state = torch.load(source_run / "checkpoint_last.pth", weights_only=True)["network"]
    published = tmp_path / "net.pth"
    # The paper's files are bare state dicts with layer_blocks.* aliases of layer1..layer4.
    torch.save({**state, "layer_blocks.0.0.conv1.weight": state["model.layer1.0.conv1.weight"]}, published)
    network = architectures.select("resnet18_frozen_normalize", 16, pretrained=False)
    networks.load_into(network, str(published), "--init_from net.pth")
    assert all(torch.equal(value, state[key]) for key, value in network.state_dict().items())


def test_init_from_mistakes(source_run, tmp_path, capsys):
    save_path = tmp_path / "runs"
    flags = DIGITS + ["--save_path", str(save_path)]
    missing = parse_error(flags + ["--init_from", str(tmp_path / "none.pth")], capsys)
    assert "--init_from" in missing and "no such file" in missing and "checkpoint_last.pth" in missing
    both = parse_error(flags + ["--init_from", str(source_run / "checkpoint_last.pth"), "--pretrained_weights",
                                str(tmp_path / "resnet18.pth")], capsys)
    assert "drop one of them" in both
    notes = tmp_path / "notes.pth"
    notes.write_text("not a checkpoint")
    error = command_error(flags + ["--init_from", str(notes)], capsys)
    assert f"--init_from {notes}" in error and "not a readable checkpoint" in error
    error = command_error(flags + ["--embed_dim", "8", "--init_from", str(source_run / "checkpoint_last.pth")], capsys)
    assert "holds --arch resnet18_frozen_normalize --head linear --embed_dim 16, not" in error
    assert not save_path.exists()  # no run folder for a run that could not start
