import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import criteria
import diffusion
import parameters
import training
from training.run import build_criterion


def parse_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parameters.parse(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_defaults_are_the_paper_runs():
    settings = parameters.parse([])
    assert settings == training.RunSettings()
    optimisation, model = settings.optimisation, settings.model
    assert (optimisation.optim, optimisation.lr, optimisation.decay, settings.batches.bs,
            settings.batches.samples_per_class, model.embed_dim, model.arch) == \
        ("adam", 1e-5, 4e-4, 112, 2, 128, "resnet50_frozen_normalize")
    distillation = settings.distillation
    assert (distillation.kd_tau, distillation.kd_lambda, distillation.diffusion.w,
            distillation.diffusion.options["tau"]) == (1.0, 75.0, 0.99, 1.0)
    assert settings.loss.hyperparameters == {"pos_weight": 2.0, "neg_weight": 40.0, "margin": 0.1, "thresh": 0.5}
    margin = parameters.parse(["--loss", "margin"]).loss.hyperparameters
    assert (margin["margin"], margin["beta"], margin["beta_lr"]) == (0.2, 1.2, 5e-4)
    assert settings.evaluation.evaluation_metrics == ("e_recall@1", "e_recall@2", "e_recall@4", "e_recall@8", "nmi")


def criterion_of(argv):
    return build_criterion(parameters.parse(argv), criteria.DEFAULT_CLASSES)


def test_paper_flags_parse_and_build_the_criterion():
    criterion = criterion_of(["--dataset", "cars196", "--loss", "multisimilarity_obd_sd", "--PSD", "--OBDP",
                                 "--kd_lambda", "200", "--diffusion_w", "0.99", "--arch",
                                 "resnet50_frozen_normalize_double", "--embed_dim", "512", "--tau", "200", "250",
                                 "--gamma", "0.3", "--n_epochs", "300"])
    assert criterion.distillation == criteria.Distillation(PSD=True, OBDP=True, kd_tau=1.0, kd_lambda=200.0)
    assert criterion.n_epochs == 300
    assert criterion.distillation.diffusion == diffusion.Settings(w=0.99, norm="softmax", k=None, knn="symmetric",
                                                                  solver="solve", options={"tau": 1.0})
    assert criterion.distillation_weight(150) == pytest.approx(100.0)
    assert parameters.parse(["--dataset", "online_products"]).evaluation.evaluation_metrics[:4] == \
        ("e_recall@1", "e_recall@10", "e_recall@100", "e_recall@1000")


def test_psd_alone_distils_the_undiffused_target():
    criterion = criterion_of(["--PSD"])
    assert criterion.distillation.target_diffusion() is None
    assert criterion_of([]).distillation is None


@pytest.mark.parametrize("argv,message", [
    (["--bs", "111"], "--bs 111 is not a multiple of --samples_per_class 2"),
    (["--loss", "nope"], "invalid choice: 'nope'"),
    (["--dataset", "imagenet"], "choose from"),
    (["--arch", "vgg16_normalize"], "resnet18"),
    (["--arch", "resnet50_frozen_wide"], "_frozen, _normalize, _double"),
    (["--data_sampler", "greedy"], "class_random"),
    (["--OBDP"], "add --PSD"),
    (["--diffusion_w", "1.0"], "[0, 1)"),
    (["--diffusion_solver", "cg"], "--diffusion_norm symmetric"),
    (["--diffusion_k", "0"], "--diffusion_k must be at least 1"),
    (["--embed_dim", "0"], "--embed_dim must be positive"),
    (["--evaluation_metrics", "recall@1"], "e_recall@K"),
    (["--loss", "multisimilarity", "--batch_mining", "distance"], "takes no --batch_mining"),
    (["--lr", "-0.001"], "--lr must be 0 or more, got -0.001"),
    (["--decay", "-0.1"], "--decay must be 0 or more"),
    (["--seed", "-3"], "--seed must be 0 or more"),
    (["--kd_lambda", "-75"], "--kd_lambda must be 0 or more"),
])
def test_impossible_combinations_are_argparse_errors(argv, message, capsys):
    err = parse_error(argv, capsys)
    assert message in err
    # one line, no usage block, and where to look
    assert err.count("\n") == 1 and err.startswith("error: ") and err.rstrip().endswith("see python main.py --help")


@pytest.mark.parametrize("argv,warning", [
    (["--lr", "0"], "--lr 0: the backbone does not train, nor the embedding layer"),
    (["--lr", "0", "--fc_lr", "1e-4"], "--lr 0: the backbone does not train\n"),
    (["--tau", "100", "200", "--n_epochs", "150"], "--tau 200 at or after --n_epochs 150"),
    (["--PSD", "--n_epochs", "1"], "--PSD with --n_epochs 1"),
    (["--PSD", "--OBDP", "--diffusion_k", "111"], "--diffusion_k 111 with --bs 112"),
])
def test_legal_values_without_effect_warn_in_one_line(argv, warning, capsys):
    parameters.parse(argv)
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and err.count("\n") == 1 and warning in err
    parameters.parse(argv, warn=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("dataset, lists, reason", [
    ("list", ["--train_list", "train.txt", "--test_list", "test.txt"], "its list files name its images"),
    ("digits", [], "it ships with scikit-learn"),
])
def test_a_source_that_the_dataset_does_not_read_warns(dataset, lists, reason, capsys):
    parameters.parse(["--dataset", dataset, *lists, "--source", "/data"])
    err = capsys.readouterr().err
    assert err == f"warning: --source /data with --dataset {dataset}, which reads no folder ({reason}): it has no " \
                  "effect; drop --source\n"
    parameters.parse(["--dataset", dataset, *lists])
    parameters.parse(["--dataset", "cub200", "--source", "/data"])
    assert capsys.readouterr().err == ""


def test_effective_values_do_not_warn(capsys):
    parameters.parse(["--tau", "100", "--n_epochs", "150", "--PSD", "--OBDP", "--diffusion_k", "10"])
    assert capsys.readouterr().err == ""


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        parameters.parse(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag, default in [("--lr LR", "1e-05"), ("--seed SEED", "0"), ("--n_epochs N_EPOCHS", "150"),
                          ("--loss_margin_nu LOSS_MARGIN_NU", "0.0"), ("--PSD", "False")]:
        assert re.search(re.escape(flag) + r" [^()]*\(default: " + re.escape(default) + r"\)", out), flag
    assert "(default: %(default)s)" not in out


def test_help_states_each_default_once(capsys):
    # a help that says its default in words got "(default: None)" appended as well
    from evaluation import index as image_index

    helps = [help_text(parameters.parse, [], capsys)] + [help_text(command, [], capsys) for command in commands()]
    helps += [help_text(image_index.main, [name], capsys) for name in ("build", "search")]
    for text in helps:
        joined = " ".join(text.split())
        assert re.findall(r"default[^()]*\)[^()]{0,3}\(default: [^)]*\)", joined) == [], text[:80]
    assert "(default: 0.0)" in " ".join(help_text(parameters.parse, [], capsys).split())


def test_main_help_imports_no_heavy_library():
    # torchvision (which imports torchvision.ops and torch._dynamo), scikit-learn and scipy.stats took
    # seconds of every --help; they are imported where they are used
    probe = ("import runpy, sys\nsys.argv = ['main.py', '--help']\ntry:\n    runpy.run_path('main.py', "
             "run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print(' '.join(sorted(name for name in sys.modules if name.startswith(('torchvision', 'torch._dynamo', "
             "'sklearn', 'scipy.stats', 'timm', 'pandas', 'matplotlib')))), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "usage: python main.py" in result.stdout, result.stderr
    assert result.stderr.strip() == ""


def test_storage_metric_is_always_evaluated():
    settings = parameters.parse(["--evaluation_metrics", "nmi", "--storage_metrics", "e_recall@1"])
    assert settings.evaluation.evaluation_metrics == ("nmi", "e_recall@1")


def commands():
    """The main() of every command the README documents."""
    import Test_pretrained_models
    from benchmarks import criterion, diffusion, evaluation, gpu, memory_diffusion, train_step
    from datasets import prepare, verify
    from evaluation import classify, explain, export, reports, screenshot
    from evaluation import index as image_index
    from studies import compare, summarize, tune, unseen_classes

    return (Test_pretrained_models.main, reports.main, export.main, classify.main, criterion.main,
            diffusion.main, evaluation.main, train_step.main, summarize.main, verify.main, prepare.main,
            image_index.main, screenshot.main, explain.main, unseen_classes.main, tune.main, compare.main,
            gpu.main, memory_diffusion.main)


def help_text(command, argv, capsys):
    with pytest.raises(SystemExit):
        command([*argv, "--help"])
    return capsys.readouterr().out


def command_flags(capsys):
    """Every option of the commands the README documents (and of torchrun), read from their --help."""
    from torch.distributed.run import get_args_parser as torchrun_parser

    flags = {option for parser in (parameters.build_parser(), torchrun_parser())
             for action in parser._actions for option in action.option_strings}
    for command in commands():
        flags |= set(re.findall(r"--[A-Za-z]\w*", help_text(command, [], capsys)))
    sample_runs = subprocess.run(["bash", "Sample_Runs/SampleRuns.sh", "--help"], cwd=Path(__file__).parent.parent,
                                 capture_output=True, text=True, check=True)
    return flags | set(re.findall(r"--[A-Za-z]\w*", sample_runs.stdout))


REPO_ROOT = Path(__file__).parent.parent
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "benchmarks" / "README.md"]


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(REPO_ROOT)) for page in PAGES])
def test_every_flag_command_and_link_of_the_documentation_exists(page, capsys):
    text = page.read_text()
    mentioned = set(re.findall(r"(?<![\w-])--[A-Za-z]\w*[A-Za-z0-9]\b", text)) - {"--help"}
    assert mentioned - command_flags(capsys) == set()
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in re.findall(r"`make (\w+)`", text):
        assert f"\n{target}:" in makefile
    for module in re.findall(r"python -m ([\w.]+)", text):
        assert importlib.util.find_spec(module) is not None, module
    for script in re.findall(r"(?:bash|python) ((?:[\w./-]+)\.(?:sh|py))\b", text):
        assert (REPO_ROOT / script).exists(), script
    for path in re.findall(r"`((?:tests|docs|benchmarks|criteria|diffusion|evaluation|datasets|datasampler|"
                           r"architectures|Sample_Runs)/[\w./-]+\.(?:py|sh|md|yaml))`", text):
        assert (REPO_ROOT / path).exists(), path
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        if not link.startswith("http"):
            assert (page.parent / link).exists(), link


# a path of this repository as files cite it: a folder of the repository, then the file
CITED_PATH = re.compile(r"(?<![\w./-])((?:tests|docs|benchmarks|criteria|diffusion|evaluation|datasets|datasampler|"
                        r"architectures|Sample_Runs|training|studies)/[\w./-]*\w\.(?:py|sh|md|yaml|yml|txt|json))\b")


def test_every_path_a_tracked_file_cites_exists():
    # requirements.txt cited a test file after it had moved; the pages' own test did not read it
    listed = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    names = [name for name in listed.stdout.splitlines()
             if name.endswith((".md", ".txt", ".py", ".yaml", ".yml", ".sh")) or Path(name).name == "Makefile"]
    missing = []
    for name in names:
        path = REPO_ROOT / name
        if not path.is_file():
            continue  # deleted in this working tree, not yet in git
        for cited in CITED_PATH.findall(path.read_text(errors="replace")):
            # from the repository's root, or from the citing file's folder (a config's include)
            if not ((REPO_ROOT / cited).exists() or (path.parent / cited).exists()):
                missing.append(f"{name} cites {cited}")
    assert missing == []


def test_the_readme_stays_a_front_page():
    assert len((REPO_ROOT / "README.md").read_bytes()) < 20_000


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_benchmarks_refuse_cuda_without_a_gpu(capsys):
    from benchmarks import criterion, diffusion, train_step

    for command in (criterion, diffusion, train_step):
        with pytest.raises(SystemExit) as exit_info:
            command.main(["--device", "cuda"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1
        assert "no CUDA GPU; use --device cpu" in err and "Traceback" not in err
