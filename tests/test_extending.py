"""docs/extending.md stays true: the code blocks of each of its sections run, in order, and then
the test functions they define. What the examples register is removed afterwards."""
import re
from pathlib import Path

import pytest

import architectures
import criteria
import datasets
import diffusion
import evaluation.metrics

PAGE = Path(__file__).parent.parent / "docs" / "extending.md"
REGISTRIES = [criteria.CRITERIA, criteria.MINERS, evaluation.metrics.METRICS, datasets.LOADERS,
              architectures.BACKBONES, diffusion.GRAPHS, diffusion.SOLVERS]


def sections():
    """{section title: [its python code blocks]}."""
    found = {}
    for part in re.split(r"^## ", PAGE.read_text(), flags=re.M)[1:]:
        title, body = part.split("\n", 1)
        blocks = re.findall(r"```python\n(.*?)```", body, flags=re.S)
        if blocks:
            found[title.strip()] = blocks
    return found


@pytest.fixture
def registries_restored():
    before = [dict(table) for table in REGISTRIES]
    yield
    for table, entries in zip(REGISTRIES, before):
        for name in set(table) - set(entries):
            del table[name]


def test_the_page_has_an_example_of_each_plugin_kind():
    assert list(sections()) == ["A loss", "A miner", "A metric", "A dataset", "A backbone",
                                "A diffusion graph or solver"]


@pytest.mark.parametrize("title", list(sections()))
def test_the_example_and_its_test_run(title, registries_restored, tmp_path):
    namespace = {"__name__": f"extending_{title.split()[-1]}"}
    for block in sections()[title]:
        exec(compile(block, f"{PAGE}: {title}", "exec"), namespace)
    tests = [function for name, function in namespace.items() if name.startswith("test_")]
    assert tests, f"the {title} section defines no test"
    for function in tests:
        arguments = {"tmp_path": tmp_path} if "tmp_path" in function.__code__.co_varnames else {}
        function(**arguments)
