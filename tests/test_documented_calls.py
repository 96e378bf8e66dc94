"""What the docs say about the code, held: training's documented call, docs/runs.md's library example,
the names a page places in a file, and the callers of the evaluation set-up that
docs/architecture.md names."""
import dataclasses
import importlib
import re
import types
from pathlib import Path

import parameters
import training
import training.run

REPO = Path(__file__).parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PACKAGES = ["architectures", "criteria", "datasampler", "datasets", "diffusion", "evaluation", "training", "studies",
            "benchmarks", "parameters", "checkpoints", "distributed", "errors", "registry"]


def test_the_documented_training_call_imports_the_run_function():
    namespace = {}
    exec("\n".join(line.strip() for line in training.__doc__.splitlines()  # noqa: S102  the docstring's own lines
                   if line.strip().startswith(("from training", "import training"))), namespace)
    assert namespace["run"] is training.run.run and namespace["RunSettings"] is training.RunSettings


def test_the_library_example_of_runs_md_builds_typed_settings_that_equal_its_flags(monkeypatch):
    """The example runs with training.run.run replaced: the settings it passes equal those of the
    flags the page gives for it, and its callback stops a poor run."""
    page = (REPO / "docs" / "runs.md").read_text()
    section = page.split("\n## A run as a library call")[1].split("\n## ")[0]
    (example,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert "import parameters" not in example  # a library call needs no flags
    calls = []
    monkeypatch.setattr(training.run, "run", lambda settings, callbacks: calls.append((settings, callbacks)) or
                        types.SimpleNamespace(folder=None, metrics=[], selected={}, stopped_after=None))
    exec(compile(example, "docs/runs.md", "exec"), {})  # noqa: S102  the page's example
    (settings, callbacks), = calls
    flags = re.search(r"makes the same value from\s+flags \(`([^`]+)`", section).group(1).split()
    assert settings == parameters.parse(flags)
    poor = types.SimpleNamespace(epoch=2, metrics={"test": {"e_recall@1": 0.4}}, losses={})
    assert callbacks[0](poor) and not callbacks[0](types.SimpleNamespace(epoch=1, metrics=poor.metrics, losses={}))


def resolves(dotted):
    """Whether `dotted` (module.attribute...) names something: the longest importable prefix, then
    attributes (a dataclass's fields count)."""
    parts = dotted.split(".")
    for length in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:length]))
        except ImportError:
            continue
        for part in parts[length:]:
            fields = {field.name for field in dataclasses.fields(found)} if dataclasses.is_dataclass(found) else set()
            if not hasattr(found, part) and part not in fields:
                return False
            found = getattr(found, part, None)
        return True
    return False


def test_every_name_of_the_code_a_page_gives_is_there():
    """`PUBLISHED` in `datasets/verify.py`, `evaluation.evaluator.setup`: what a reader would look for."""
    placed = [(page.name, name, path) for page in PAGES
              for name, path in re.findall(r"`(\w+)` in `([\w/]+\.py)`", page.read_text())]
    assert [(page, name, path) for page, name, path in placed if name not in (REPO / path).read_text()] == []
    dotted = {(page.name, name) for page in PAGES for name in re.findall(rf"`((?:{'|'.join(PACKAGES)})(?:\.\w+)+)`",
                                                                          page.read_text())
              if not name.endswith((".py", ".csv", ".json"))}
    assert len(dotted) > 20 and sorted((page, name) for page, name in dotted if not resolves(name)) == []


def test_the_callers_of_the_evaluation_set_up_are_the_ones_architecture_md_names():
    sources = [path for path in REPO.rglob("*.py")
               if not {"tests", ".venv", "Training_Results"} & set(path.relative_to(REPO).parts)]
    listed = [str(path.relative_to(REPO)) for path in sources if "evaluator.setup(" in path.read_text()]
    line = next(paragraph for paragraph in (REPO / "docs" / "architecture.md").read_text().split("\n- ")
                if paragraph.startswith("The evaluation set-up"))
    named = re.findall(r"`([\w/]+\.py)`", line)
    assert sorted(named) == sorted(listed)
