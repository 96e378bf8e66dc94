"""The layers of the code (docs/architecture.md), read from the imports of every module: an import
never runs from a lower layer to a higher one, the packages never import each other in a circle,
no library imports the command line, and nothing imports main.py."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
# From the ground up; a package or top-level module may import its own layer and the layers below.
LAYERS = [
    {"errors", "registry"},
    {"checkpoints", "diffusion"},
    {"datasets", "datasampler", "criteria", "architectures", "distributed"},
    {"evaluation"},
    {"training"},
    {"parameters"},
    {"main", "Test_pretrained_models", "studies", "benchmarks"},
]
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}
LIBRARIES = {"errors", "registry", "checkpoints", "diffusion", "datasets", "datasampler", "criteria", "architectures",
             "distributed", "evaluation", "training"}


def modules():
    """{path relative to the repository: its top-level unit (package or module)} of the project's code."""
    paths = [path for path in ROOT.glob("*.py")] + [path for path in ROOT.glob("*/**/*.py")
                                                    if path.parts[len(ROOT.parts)] not in ("tests", ".venv")]
    return {path.relative_to(ROOT): path.relative_to(ROOT).parts[0].removesuffix(".py") for path in paths}


def imported_units(path):
    """The project's top-level units that the module at `path` imports, wherever in it."""
    tree = ast.parse((ROOT / path).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {name for name in names if name in LAYER_OF}


GRAPH = {path: (unit, imported_units(path)) for path, unit in modules().items()}


def test_every_unit_of_the_code_has_a_layer():
    assert {unit for unit, _ in GRAPH.values()} <= set(LAYER_OF)


@pytest.mark.parametrize("path", sorted(GRAPH, key=str), ids=str)
def test_imports_run_downward_only(path):
    unit, imported = GRAPH[path]
    upward = sorted(name for name in imported if LAYER_OF[name] > LAYER_OF[unit])
    assert not upward, f"{path} (layer {LAYER_OF[unit]}) imports {upward} from a higher layer"


def test_no_library_imports_the_command_line_and_nothing_imports_main():
    for path, (unit, imported) in GRAPH.items():
        if unit in LIBRARIES:
            assert "parameters" not in imported, path
        assert "main" not in imported, path


def test_the_units_import_each_other_in_no_circle():
    edges = {}
    for unit, imported in GRAPH.values():
        edges.setdefault(unit, set()).update(imported - {unit})
    state = {}

    def visit(unit, trail):
        if state.get(unit) == "done":
            return
        assert state.get(unit) != "open", f"import circle: {' -> '.join(trail + [unit])}"
        state[unit] = "open"
        for target in sorted(edges.get(unit, ())):
            visit(target, trail + [unit])
        state[unit] = "done"

    for unit in sorted(edges):
        visit(unit, [])
