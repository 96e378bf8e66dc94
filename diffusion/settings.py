"""diffusion.Settings: which graph, which solver and how far a signal is diffused. The PSD/OBDP
target (criteria.Distillation) and the test-time re-ranking (evaluation) each hold one."""
import dataclasses
from dataclasses import dataclass, field

from diffusion.graphs import GRAPHS, KNN_MODES, Graph, affinity_graph
from diffusion.propagation import SOLVERS
from errors import SettingError


@dataclass(frozen=True)
class Settings:
    """X = (1 - w) (I - w P)^-1 Y over the affinity graph P of a set of embeddings.

    norm: the graph (diffusion.GRAPHS: softmax, symmetric); k: keep each sample's k nearest
    neighbours (None: the dense graph), the edges made symmetric by `knn` (symmetric: either end
    chose the edge; mutual: both did); solver: diffusion.SOLVERS (solve, iterative, cg);
    options: the parameters of the graph and the solver (softmax: tau; symmetric: gamma; iterative
    and cg: tol, iters), their registered defaults where not given. The defaults are the released
    code's: the dense softmax graph at tau 1, a direct solve, w 0.99.

    Settings that cannot work are refused at construction, each as a SettingError (a ValueError);
    options of a graph or solver other than the chosen ones are dropped.
    """
    w: float = 0.99
    norm: str = "softmax"
    k: int | None = None
    knn: str = "symmetric"
    solver: str = "solve"
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        graph, solver = GRAPHS.get(self.norm), SOLVERS.get(self.solver)
        unknown = sorted(set(self.options) - set(parameters()))
        if unknown:
            raise SettingError(f"no diffusion graph or solver takes {', '.join(unknown)}; the parameters are "
                               f"{', '.join(parameters())}", parameters())
        # The parameters in effect, typed as their defaults, those of another graph or solver dropped:
        # equal settings compare equal however they were given, and dataclasses.replace may change norm.
        taken = {**graph.parameters, **solver.parameters}
        object.__setattr__(self, "options", {name: type(default)(self.options.get(name, default))
                                             for name, default in taken.items()})
        problems = []
        if not 0 <= self.w < 1:
            problems.append((f"w must lie in [0, 1), got {self.w}", ["w"]))
        if self.k is not None and self.k < 1:
            problems.append((f"k must be at least 1, got {self.k}", ["k"]))
        if self.knn not in KNN_MODES:
            problems.append((f"knn must be one of {', '.join(KNN_MODES)}, not {self.knn!r}", ["knn"]))
        if solver.needs_symmetric and not graph.symmetric:
            symmetric = [name for name, entry in GRAPHS.items() if entry.symmetric]
            problems.append((f"solver {self.solver} needs a symmetric graph: norm {' or '.join(symmetric)}",
                             ["solver", "norm"]))
        if problems:
            raise SettingError(*problems[0])

    def graph_parameters(self) -> dict:
        return {name: self.options[name] for name in GRAPHS.get(self.norm).parameters}

    def solver_parameters(self) -> dict:
        return {name: self.options[name] for name in SOLVERS.get(self.solver).parameters}

    def affinity(self, similarities) -> Graph:
        """The graph of a set whose pairwise similarities are `similarities` (N x N)."""
        return affinity_graph(similarities, GRAPHS.get(self.norm)(**self.graph_parameters()), self.k, self.knn)

    def graph_from_edges(self, rows, cols, edge_similarities, size) -> Graph:
        """The graph on a given symmetric edge set (sorted by row, then column)."""
        return GRAPHS.get(self.norm)(**self.graph_parameters()).sparse(rows, cols, edge_similarities, size)

    def diffuse(self, graph: Graph, targets):
        """(1 - w) (I - w P)^-1 Y, started on the graph's invariant component."""
        solver = SOLVERS.get(self.solver)(**self.solver_parameters())
        return solver(graph.transition, targets, self.w, invariant=(graph.right, graph.left))


def parameters() -> dict:
    """{name: default} of every registered graph's and solver's parameters: the options a Settings
    may hold. A name two entries share is one setting, so their defaults must agree."""
    merged = {}
    for kind in (GRAPHS, SOLVERS):
        for entry_name, entry in kind.items():
            for name, default in entry.parameters.items():
                if name in merged and merged[name] != default:
                    raise ValueError(f"the {kind.kind} {entry_name!r} gives its parameter {name!r} the default "
                                     f"{default!r}, another entry {merged[name]!r}: one setting cannot have both")
                if name in {field_.name for field_ in dataclasses.fields(Settings)}:
                    raise ValueError(f"the {kind.kind} {entry_name!r} names a parameter {name!r}, which is a "
                                     "setting of its own: rename it")
                merged[name] = default
    return merged
