import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import diffusion
from diffusion import graphs, propagation
from tests import reference


def settings(w=0.99, diffusion_tau=None, norm="softmax", tau=None, gamma=None, tol=None, max_iters=None, **core):
    """diffusion.Settings in the keywords the tests name them by (the flags' names)."""
    options = {name: value for name, value in (("tau", diffusion_tau if diffusion_tau is not None else tau),
                                               ("gamma", gamma), ("tol", tol), ("iters", max_iters))
               if value is not None}
    return diffusion.Settings(w=w, norm=norm, options=options, **core)


def targets(teacher, kd_tau=1.0, **options):
    """The soft target of a teacher batch with the settings `options` describe."""
    return diffusion.soft_targets(teacher, kd_tau, settings(**options))


def graph_of(similarity, **options):
    return settings(**options).affinity(similarity)


def teacher_batch(size=12, dim=8, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(size, dim, generator=generator, dtype=dtype), dim=1)


@pytest.mark.parametrize("w,diffusion_tau,kd_tau", [(0.99, 1.0, 1.0), (0.3, 1.0, 1.0), (0.5, 0.005, 1.0),
                                                    (0.5, 0.1, 0.5), (0.0, 1.0, 2.0)])
def test_soft_targets_match_dense_closed_form(w, diffusion_tau, kd_tau):
    teacher = teacher_batch()
    expected = reference.diffused_target(teacher, kd_tau, w, diffusion_tau)
    got = targets(teacher, kd_tau=kd_tau, w=w, diffusion_tau=diffusion_tau)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-12)
    got32 = targets(teacher.float(), kd_tau=kd_tau, w=w, diffusion_tau=diffusion_tau)
    np.testing.assert_allclose(got32.numpy(), expected, atol=1e-5)


def test_closed_form_is_the_limit_of_the_iteration():
    teacher, w = teacher_batch(), 0.9
    similarity = teacher @ teacher.T
    q = torch.softmax(similarity, dim=1)
    transition = torch.softmax(similarity.masked_fill(torch.eye(len(teacher), dtype=torch.bool), float("-inf")), 1)
    iterate = q
    for _ in range(400):
        iterate = w * transition @ iterate + (1 - w) * q
    torch.testing.assert_close(targets(teacher, w=w), iterate, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", ["identical", "two", "antipodal"])
def test_degenerate_batches_give_finite_distributions(case):
    teacher = {"identical": torch.ones(6, 4) / 2, "two": teacher_batch(2, dtype=torch.float32),
               "antipodal": torch.tensor([[1.0, 0], [-1.0, 0], [1.0, 0], [-1.0, 0]])}[case]
    for diffusion_tau in (1.0, 0.005):
        target = targets(teacher, w=0.99, diffusion_tau=diffusion_tau)
        assert torch.isfinite(target).all() and (target >= 0).all()
        torch.testing.assert_close(target.sum(dim=1), torch.ones(len(teacher)))


def test_bfloat16_input_gives_float32_target_without_gradient():
    teacher = teacher_batch(dtype=torch.float32).requires_grad_()
    full = targets(teacher, w=0.99)
    half = targets(teacher.bfloat16(), w=0.99)
    assert half.dtype == torch.float32 and not half.requires_grad and not full.requires_grad
    torch.testing.assert_close(half, full, atol=2e-2, rtol=0)


# --- graphs and solvers (issue 3): loop-built float64 graphs and the dense closed form ---

def loop_graph(embeddings, norm, tau=1.0, gamma=3.0, k=None, knn="symmetric"):
    """The transition matrix by plain loops over rows and edges, in float64."""
    rows = embeddings.double().tolist()
    size = len(rows)
    similarity = [[sum(a * b for a, b in zip(rows[i], rows[j])) for j in range(size)] for i in range(size)]
    if k is None:
        edges = {(i, j) for i in range(size) for j in range(size) if i != j}
    else:
        chosen = set()
        for i in range(size):
            others = sorted((j for j in range(size) if j != i), key=lambda j: -similarity[i][j])
            chosen |= {(i, j) for j in others[:k]}
        reverse = {(j, i) for i, j in chosen}
        edges = chosen | reverse if knn == "symmetric" else chosen & reverse
    transition = np.zeros((size, size))
    if norm == "softmax":
        for i in range(size):
            row = [j for j in range(size) if (i, j) in edges]
            if not row:
                continue
            top = max(similarity[i][j] / tau for j in row)
            total = sum(math.exp(similarity[i][j] / tau - top) for j in row)
            for j in row:
                transition[i, j] = math.exp(similarity[i][j] / tau - top) / total
    else:
        affinity = np.zeros((size, size))
        for i, j in edges:
            affinity[i, j] = max(similarity[i][j], 0.0) ** gamma
        degree = affinity.sum(axis=1)
        for i, j in edges:
            if degree[i] > 0 and degree[j] > 0:
                transition[i, j] = affinity[i, j] / math.sqrt(degree[i] * degree[j])
    return transition, np.array(similarity)


def closed_form_target(embeddings, w, kd_tau=1.0, **graph):
    transition, similarity = loop_graph(embeddings, **graph)
    target = reference.row_softmax(similarity, kd_tau)
    diffused = (1 - w) * np.linalg.inv(np.eye(len(target)) - w * transition) @ target
    return diffused / diffused.sum(axis=1, keepdims=True)


GRAPHS = [dict(norm="softmax"), dict(norm="softmax", k=4), dict(norm="softmax", k=4, knn="mutual"),
          dict(norm="softmax", tau=0.1, k=6), dict(norm="symmetric"), dict(norm="symmetric", k=4),
          dict(norm="symmetric", k=4, knn="mutual"), dict(norm="symmetric", gamma=1.0, k=6)]


def solver_options(graph):
    return ["solve", "iterative"] + (["cg"] if graph["norm"] == "symmetric" else [])


@pytest.mark.parametrize("graph", GRAPHS, ids=lambda g: "-".join(f"{k}={v}" for k, v in g.items()))
@pytest.mark.parametrize("w", [0.5, 0.99])
def test_every_graph_and_solver_matches_the_float64_closed_form(graph, w):
    teacher = teacher_batch(size=16, dim=6, seed=3)
    expected = closed_form_target(teacher, w, **graph)
    options = {"norm": graph["norm"], "k": graph.get("k"), "knn": graph.get("knn", "symmetric"),
               "gamma": graph.get("gamma", 3.0)}
    for solver in solver_options(graph):
        exact = targets(teacher, w=w, diffusion_tau=graph.get("tau", 1.0), solver=solver,
                                       tol=1e-13, max_iters=20000, **options)
        np.testing.assert_allclose(exact.numpy(), expected, atol=1e-9, err_msg=solver)
        single = targets(teacher.float(), w=w, diffusion_tau=graph.get("tau", 1.0), solver=solver,
                                        tol=1e-7, max_iters=20000, **options)
        np.testing.assert_allclose(single.numpy(), expected, atol=1e-4, err_msg=solver)


ISOLATED = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.95, -0.1], [-1.0, 0.0]], dtype=torch.float64)


@pytest.mark.parametrize("graph", GRAPHS + [dict(norm=norm, k=1, knn="mutual") for norm in ("softmax", "symmetric")],
                         ids=lambda g: "-".join(f"{k}={v}" for k, v in g.items()))
@pytest.mark.parametrize("batch", ["random", "isolated"])
def test_invariant_pair_is_fixed_by_the_loop_built_transition(graph, batch):
    # P r = r, l^T P = l^T and l . r = 1, checked on the loop-built float64 P; "isolated" has a
    # sample with no positive affinity (and, for small mutual k, no edge).
    teacher = teacher_batch(size=16, dim=6, seed=3) if batch == "random" else ISOLATED
    transition, similarity = loop_graph(teacher, **graph)
    options = {key: graph[key] for key in ("norm", "tau", "gamma", "k", "knn") if key in graph}
    built = graph_of(torch.as_tensor(similarity), **options)
    right, left = built.right.numpy(), built.left.numpy()
    np.testing.assert_allclose(transition @ right, right, atol=1e-12)
    np.testing.assert_allclose(left @ transition, left, atol=1e-12)
    assert left @ right == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("norm,solver", [("softmax", "iterative"), ("symmetric", "iterative"), ("symmetric", "cg")])
def test_starting_on_the_invariant_component_takes_fewer_steps_to_the_same_solution(norm, solver):
    teacher, w = teacher_batch(size=40, dim=4, seed=6), 0.99
    similarity = teacher @ teacher.T
    graph = graph_of(similarity, norm=norm, k=8)
    targets = torch.softmax(similarity, dim=1)
    exact = propagation.solve(graph.transition, targets, w)
    run = propagation.iterate if solver == "iterative" else propagation.conjugate_gradient
    plain, plain_steps = run(graph.transition, targets, w, 1e-10, 5000)
    started, started_steps = run(graph.transition, targets, w, 1e-10, 5000,
                                 propagation.initial_guess(targets, w, graph.right, graph.left))
    assert started_steps < plain_steps < 5000
    for result in (plain, started):
        torch.testing.assert_close(result, exact, atol=1e-8, rtol=0)


def test_knn_graph_keeps_exactly_k_neighbours_per_row_before_symmetrising():
    teacher = teacher_batch(size=20, seed=4)
    similarity = teacher @ teacher.T
    neighbours = graphs.nearest_neighbours(similarity, 5)
    assert neighbours.shape == (20, 5)
    for i, row in enumerate(neighbours.tolist()):
        assert i not in row and len(set(row)) == 5
        others = sorted((j for j in range(20) if j != i), key=lambda j: -float(similarity[i, j]))
        assert set(row) == set(others[:5])
    chosen = {(i, j) for i, row in enumerate(neighbours.tolist()) for j in row}
    for mode, expected in (("symmetric", chosen | {(j, i) for i, j in chosen}),
                           ("mutual", {(i, j) for i, j in chosen if (j, i) in chosen})):
        rows, cols = graphs.knn_edges(similarity, 5, mode)
        assert set(zip(rows.tolist(), cols.tolist())) == expected


def test_nearest_neighbours_exclude_the_row_itself_among_ties():
    similarity = torch.ones(5, 5)
    for i, row in enumerate(graphs.nearest_neighbours(similarity, 3).tolist()):
        assert i not in row and len(set(row)) == 3


@pytest.mark.parametrize("norm", ["softmax", "symmetric"])
def test_iteration_converges_and_stops_at_its_tolerance(norm):
    teacher = teacher_batch(size=30, seed=5)
    similarity = teacher @ teacher.T
    transition = graph_of(similarity, norm=norm, k=5).transition
    targets = torch.softmax(similarity, dim=1)
    exact = propagation.solve(transition, targets, 0.9)
    result, steps = propagation.iterate(transition, targets, 0.9, tol=1e-10, max_iters=5000)
    assert steps < 5000
    # The step before stopping changed less than tol; a contraction by w bounds the error by w / (1 - w) tol.
    assert (result - exact).abs().max() <= 0.9 / 0.1 * 1e-10 + 1e-12
    previous, _ = propagation.iterate(transition, targets, 0.9, tol=0.0, max_iters=steps - 1)
    assert (result - previous).abs().max() < 1e-10
    _, capped = propagation.iterate(transition, targets, 0.9, tol=0.0, max_iters=7)
    assert capped == 7


def test_conjugate_gradient_needs_a_symmetric_graph():
    with pytest.raises(ValueError, match="symmetric"):
        targets(teacher_batch(), solver="cg", norm="softmax")


@pytest.mark.parametrize("options", [dict(norm="symmetric"), dict(norm="symmetric", k=2, solver="cg"),
                                     dict(norm="softmax", k=1, knn="mutual", solver="iterative"),
                                     dict(norm="symmetric", k=5, knn="mutual", solver="iterative")])
def test_rows_without_positive_affinity_or_edges_stay_finite(options):
    # The last sample points away from every other: no positive affinity, no mutual neighbour.
    teacher = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.95, -0.1], [-1.0, 0.0]])
    target = targets(teacher, w=0.99, **options)
    assert torch.isfinite(target).all() and (target >= 0).all()
    torch.testing.assert_close(target.sum(dim=1), torch.ones(5))


@pytest.mark.parametrize("options", [dict(norm="softmax", k=3, solver="iterative"),
                                     dict(norm="symmetric", k=3, solver="cg"), dict(norm="symmetric")])
def test_two_samples_identical_samples_and_bfloat16_with_every_graph(options):
    for teacher in (teacher_batch(2, dtype=torch.float32), torch.ones(6, 4) / 2,
                    teacher_batch(12, dtype=torch.float32).bfloat16()):
        target = targets(teacher, w=0.99, **options)
        assert target.dtype == torch.float32 and torch.isfinite(target).all()
        torch.testing.assert_close(target.sum(dim=1), torch.ones(len(teacher)))


def test_rerank_reorders_the_shortlist_along_the_manifold():
    # Two arcs of points on the circle, interleaved with noise: diffusion prefers the query's own arc.
    angles = torch.cat([torch.linspace(0, 1.2, 12), torch.linspace(0.05, 1.25, 12)])
    radius_offset = torch.cat([torch.zeros(12), torch.full((12,), 0.0)])
    features = torch.stack([torch.cos(angles), torch.sin(angles), radius_offset], dim=1)
    features[12:, 2] = 0.4  # the second arc is lifted out of the first one's plane
    from evaluation.neighbours import nearest_neighbours as exact_neighbours
    shortlist = exact_neighbours(features.numpy().astype(np.float32), 10)
    ranked = diffusion.rerank(features.numpy(), shortlist, 5, diffusion.rerank_settings(k=3, knn="symmetric", w=0.9))
    assert ranked.shape == (24, 5)
    for query, row in enumerate(ranked):
        assert query not in row and set(row) <= set(shortlist[query])
        assert all((item < 12) == (query < 12) for item in row[:2])
