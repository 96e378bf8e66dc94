"""The cross-batch memory against pytorch-metric-learning's CrossBatchMemory (the loss, its gradient
and the memory's contents), on memory windows where an image comes back, anchors whose only positive
is their own entry and batches that drew an image twice; and OBDP over the memory's graph against
today's OBDP and a dense float64 re-computation from scratch at every step of a memory that wraps."""
import itertools
import re
import subprocess
from pathlib import Path

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning.miners import BaseMiner
from torch.nn import functional as F

import criteria
import diffusion
import parameters
from benchmarks import memory_diffusion
from criteria import CrossBatchMemory, Distillation, SelfDistilledCriterion
from criteria.common import References
from criteria.miners import DistanceWeighted
from criteria.multisimilarity import MultiSimilarity
from tests import program
from tests.criteria.test_training import TINY, two_steps  # noqa: F401  (two_steps is a fixture)
from training.run import Run

B, D, M, STEPS = 8, 6, 20, 6  # the memory wraps around in the third step, and twice more
POOL, CLASSES, SAMPLES_PER_CLASS = 12, 3, 2
METHOD = Path(__file__).parent.parent.parent / "docs" / "method.md"


def batches(steps=STEPS, lone=True, normalise=True, seed=0):
    """Batches drawn as the class-random sampler draws them, from a pool of 12 images of 3 classes:
    B / 2 classes with replacement, 2 images of each with replacement, so that an image comes back
    within the memory's window; the first class of every batch takes one image twice. Each image
    under its own augmentation (noise). With `lone`, each batch adds an image of a class of its own,
    close to an image of another class: its only positive in the memory is its own entry, and it
    has negatives within the margin of that entry."""
    generator = torch.Generator().manual_seed(seed)
    pool = torch.randn(POOL, D, dtype=torch.float64, generator=generator)
    pool_labels = torch.arange(POOL) % CLASSES
    for step in range(steps):
        classes = torch.randint(0, CLASSES, (B // SAMPLES_PER_CLASS,), generator=generator)
        drawn = classes.repeat_interleave(SAMPLES_PER_CLASS) + CLASSES * torch.randint(0, POOL // CLASSES, (B,),
                                                                                     generator=generator)
        drawn[1] = drawn[0]
        embeddings, labels = pool[drawn], pool_labels[drawn]
        if lone:
            near = pool[drawn[0]] + 0.1 * torch.randn(D, dtype=torch.float64, generator=generator)
            embeddings, labels = torch.cat([embeddings, near[None]]), torch.cat([labels, torch.tensor([CLASSES + step])])
        embeddings = embeddings + 0.2 * torch.randn(embeddings.shape, dtype=torch.float64, generator=generator)
        yield (F.normalize(embeddings, dim=1) if normalise else embeddings), labels


class SameTriplets(BaseMiner):
    """PML's side of the comparison: the triplets our miner draws, from the same seed, on PML's
    memory, the anchor's own slot (PML's curr_batch_idx) left out before mining, as ours is."""

    def __init__(self, miner, wrapper, seed):
        super().__init__()
        self.miner, self.wrapper, self.seed = miner, wrapper, seed

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        own = torch.zeros(len(embeddings), len(ref_emb), dtype=torch.bool)
        own[torch.arange(len(embeddings)), self.wrapper.curr_batch_idx] = True
        torch.manual_seed(self.seed[0])
        return self.miner(embeddings, labels, References(ref_emb, ref_labels, own))


def compare(ours_base, pml_loss, pml_miner=None, normalise=True):
    """Ours and PML's CrossBatchMemory on the same batches: loss, gradient and memory at every step."""
    ours = SelfDistilledCriterion(ours_base, memory=CrossBatchMemory(M, D).double())
    seed = [0]
    theirs = pml_losses.CrossBatchMemory(pml_loss, D, memory_size=M)
    theirs.miner = SameTriplets(ours_base.miner, theirs, seed) if pml_miner == "same" else pml_miner
    for step, (embeddings, labels) in enumerate(batches(normalise=normalise)):
        seed[0] = step
        mine = embeddings.clone().requires_grad_()
        torch.manual_seed(step)
        our_loss = ours(mine, labels)
        their_input = embeddings.clone().requires_grad_()
        their_loss = theirs(their_input, labels)
        torch.testing.assert_close(our_loss, their_loss, rtol=1e-10, atol=1e-12)
        our_loss.backward(), their_loss.backward()
        torch.testing.assert_close(mine.grad, their_input.grad, rtol=1e-10, atol=1e-12)
        stored = int(ours.memory.stored)
        torch.testing.assert_close(ours.memory.embeddings[:stored], theirs.embedding_memory[:stored])
        assert torch.equal(ours.memory.labels[:stored], theirs.label_memory[:stored])
        assert our_loss > 0


def test_each_batch_holds_an_anchor_whose_only_positive_is_its_own_entry_with_a_negative_near_it():
    for embeddings, labels in batches():
        # a negative within MS's margin 0.1 of the lone image's similarity to its own entry, 1
        assert (labels == labels[-1]).sum() == 1 and (embeddings[:-1] @ embeddings[-1]).max() > 0.9


def test_multisimilarity_with_memory_equals_pytorch_metric_learning_with_its_avg_non_zero_reducer():
    """MS mines with the anchor's own entry among the positives and drops that pair afterwards, and
    averages over the anchors with a term: PML's MultiSimilarityMiner in CrossBatchMemory and its
    AvgNonZeroReducer (PML's default MeanReducer would also count the anchors without one)."""
    base = MultiSimilarity(pos_weight=2.0, neg_weight=40.0, margin=0.1, thresh=0.5)
    # Our MS takes the embeddings as they come (the _normalize networks normalise them): PML's dot product.
    dot = pml_distances.DotProductSimilarity(normalize_embeddings=False)
    pml = pml_losses.MultiSimilarityLoss(alpha=2.0, beta=40.0, base=0.5, distance=dot,
                                         reducer=pml_reducers.AvgNonZeroReducer())
    compare(base, pml, pml_miners.MultiSimilarityMiner(epsilon=0.1, distance=dot))


def test_contrastive_with_a_miner_and_memory_equals_pytorch_metric_learning_with_its_mean_reducer():
    base = criteria.CRITERIA.get("contrastive")(miner=DistanceWeighted(0.5), pos_margin=0.0, neg_margin=1.0)
    pml = pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0, reducer=pml_reducers.MeanReducer(),
                                     distance=pml_distances.LpDistance(normalize_embeddings=False))
    compare(base, pml, "same", normalise=False)


def test_triplet_with_a_miner_and_memory_equals_pytorch_metric_learning_with_its_mean_reducer():
    base = criteria.CRITERIA.get("triplet")(miner=DistanceWeighted(0.5), margin=0.2)
    pml = pml_losses.TripletMarginLoss(margin=0.2, reducer=pml_reducers.MeanReducer(),
                                       distance=pml_distances.LpDistance(normalize_embeddings=False, power=2))
    compare(base, pml, "same", normalise=False)


def test_multisimilarity_against_memory_matches_a_float64_loop():
    """The rule anchor by anchor on the references: the hardest positive among the same-label entries,
    the anchor's own entry included; pairs kept by the margin; the own entry then dropped; anchors
    without a kept positive (own entry included) and negative skipped."""
    generator = torch.Generator().manual_seed(3)
    batch = F.normalize(torch.randn(6, D, dtype=torch.float64, generator=generator), dim=1)
    refs = F.normalize(torch.randn(15, D, dtype=torch.float64, generator=generator), dim=1)
    labels, ref_labels = torch.tensor([0, 0, 1, 1, 2, 3]), torch.randint(0, 3, (15,), generator=generator)
    refs[:6] = batch  # the batch is in the memory, as after a push
    refs[6] = F.normalize(batch[5] + 0.05 * torch.randn(D, dtype=torch.float64, generator=generator), dim=0)
    ref_labels[:6] = labels
    references = References(refs, ref_labels, torch.eye(6, 15, dtype=torch.bool))
    batch.requires_grad_()
    ours = MultiSimilarity()(batch, labels, references)
    total, kept = 0.0, 0
    for i in range(6):
        similarity = refs @ batch[i]
        positive = [j for j in range(15) if ref_labels[j] == labels[i]]  # the own entry j = i among them
        negative = [j for j in range(15) if ref_labels[j] != labels[i]]
        hardest_positive = min(similarity[j].item() for j in positive)
        hardest_negative = max(similarity[j].item() for j in negative)
        negative = [j for j in negative if similarity[j] + 0.1 > hardest_positive]
        positive = [j for j in positive if similarity[j] - 0.1 < hardest_negative]
        if not positive or not negative:
            continue
        kept += 1
        positive = [j for j in positive if j != i]
        zero = torch.zeros((), dtype=torch.float64)  # the sum over no positive
        total = total + torch.log1p(sum((torch.exp(-2.0 * (similarity[j] - 0.5)) for j in positive), zero)) / 2.0
        total = total + torch.log1p(sum(torch.exp(40.0 * (similarity[j] - 0.5)) for j in negative)) / 40.0
    expected = total / kept
    assert kept > 0 and (labels == 3).sum() == 1  # anchor 5's only positive is its own entry; a negative is near
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(torch.autograd.grad(ours, batch)[0], torch.autograd.grad(expected, batch)[0])


@pytest.mark.parametrize("name", sorted(name for name, entry in criteria.CRITERIA.items() if entry.takes_references))
def test_every_memory_loss_on_its_first_batch_has_the_batchs_value(name):
    """An empty memory holds just the batch: the same pairs, the two copies of the image drawn twice
    a positive pair as in the batch, the same value (the gradient differs: the memory's copies carry
    none). Every anchor has another image of its class, as in the samplers' batches."""
    settings = parameters.parse(["--loss", name, "--embed_dim", str(D), "--xbm_size", str(M), "--bs", str(B)])
    embeddings, labels = next(batches(lone=False))
    alone = criteria.select(parameters.parse(["--loss", name, "--embed_dim", str(D)]).loss, embed_dim=D).double()
    with_memory = criteria.select(settings.loss, embed_dim=D).double()
    with_memory.base.load_state_dict(alone.base.state_dict())
    torch.manual_seed(0)
    expected = alone(embeddings, labels)
    torch.manual_seed(0)
    torch.testing.assert_close(with_memory(embeddings, labels), expected)


def test_memory_is_unused_and_empty_during_warm_up():
    memory = CrossBatchMemory(M, D, start=2)
    criterion = SelfDistilledCriterion(MultiSimilarity(), memory=memory)
    for step, (embeddings, labels) in enumerate(batches(lone=False)):
        criterion(embeddings.float(), labels)
        assert int(memory.stored) == (0 if step < 2 else min((step - 1) * B, M))


def test_a_batch_larger_than_the_memory_is_refused():
    with pytest.raises(ValueError, match="a batch of 8 does not fit a memory of 4 entries"):
        CrossBatchMemory(4, D).push(torch.zeros(8, D), torch.zeros(8, dtype=torch.long))


def distilled_with_memory(k, w=0.5, norm="softmax", knn="symmetric", size=M):
    settings = diffusion.Settings(w=w, norm=norm, k=k, knn=knn, solver="solve" if k is None else "iterative",
                                  options={"tol": 1e-13, "iters": 10_000})
    distillation = Distillation(PSD=True, OBDP=True, kd_tau=0.5, kd_lambda=1.0, diffusion=settings)
    memory = CrossBatchMemory(size, D, teacher=True, k=k).double()
    return SelfDistilledCriterion(MultiSimilarity(), distillation, n_epochs=2, memory=memory), settings


def test_memory_obdp_with_an_empty_memory_and_the_dense_graph_is_todays_obdp_exactly():
    criterion, settings = distilled_with_memory(k=None)
    embeddings, labels = next(batches(lone=False))
    teacher = embeddings.flip(0)
    criterion(embeddings, labels, teacher_batch=teacher, epoch=1)
    slots = torch.arange(B)
    ours = diffusion.memory_soft_targets(criterion.memory.teacher_embeddings[criterion.memory.teacher_nodes()],
                                         slots, 0.5, settings)
    assert torch.equal(ours, diffusion.soft_targets(teacher, kd_tau=0.5, diffusion=settings))
    kd = criteria.distillation_loss(embeddings, teacher, 0.5, settings)
    criterion.memory.refresh_teacher()
    criterion.memory.next_slot.zero_(), criterion.memory.stored.zero_()
    torch.testing.assert_close(criterion(embeddings, labels, teacher_batch=teacher, epoch=1),
                               MultiSimilarity()(embeddings, labels) + 0.5 * 0.25 * kd, rtol=0, atol=0)


def dense_edges(nodes, k, mode):
    """The kNN graph from scratch: each node's k nearest other nodes (all of them when fewer), the
    edges made symmetric by `mode`; a |V| x |V| boolean matrix."""
    similarities = nodes @ nodes.T
    chosen = torch.zeros(len(nodes), len(nodes), dtype=torch.bool)
    for i in range(len(nodes)):
        order = [j for j in similarities[i].argsort(descending=True).tolist() if j != i][:k]
        chosen[i, order] = True
    return chosen | chosen.T if mode == "symmetric" else chosen & chosen.T


def softmax_transition(similarities, edges, tau):
    """P_ij = exp(T_ij / tau) / sum_{l: (i, l) an edge} exp(T_il / tau) on the edges."""
    weights = torch.where(edges, torch.exp(similarities / tau), torch.zeros_like(similarities))
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-300)


def symmetric_transition(similarities, edges, gamma):
    """P = D^-1/2 A D^-1/2, A_ij = max(T_ij, 0)^gamma on the edges, D = diag(A 1)."""
    affinity = torch.where(edges, similarities.clamp_min(0) ** gamma, torch.zeros_like(similarities))
    degree = affinity.sum(dim=1)
    scale = torch.where(degree > 0, degree.rsqrt(), torch.zeros_like(degree))
    return scale[:, None] * affinity * scale[None, :]


TRANSITIONS = {"softmax": (softmax_transition, "tau"), "symmetric": (symmetric_transition, "gamma")}


def dense_memory_target(nodes, batch_nodes, edges, norm, parameter, w, kd_tau):
    """docs/method.md's target in float64: X = row_softmax(G_V G_b^T / kd_tau), Q = (1 - w)(I - w P)^-1 X,
    the batch's rows of Q clamped at 0 and each divided by its sum."""
    transition = TRANSITIONS[norm][0](nodes @ nodes.T, edges, parameter)
    spread = torch.softmax(nodes @ nodes[batch_nodes].T / kd_tau, dim=1)
    diffused = (1 - w) * torch.linalg.solve(torch.eye(len(nodes), dtype=torch.float64) - w * transition, spread)
    target = diffused[batch_nodes].clamp_min(0)
    return target / target.sum(dim=1, keepdim=True)


def clustered_teacher(generator, count, centres):
    """Teacher embeddings around a few centres: hubs, entries that many others list as neighbours."""
    chosen = centres[torch.randint(0, len(centres), (count,), generator=generator)]
    return F.normalize(chosen + 0.4 * torch.randn(count, D, dtype=torch.float64, generator=generator), dim=1)


def node_positions(memory, slots):
    nodes = memory.teacher_nodes()
    position = torch.empty(memory.size, dtype=torch.long)
    position[nodes] = torch.arange(len(nodes))
    return nodes, position[slots]


def test_every_graph_normalisation_and_mode_is_covered():
    assert set(TRANSITIONS) == set(diffusion.GRAPHS) and set(diffusion.KNN_MODES) == {"symmetric", "mutual"}


@pytest.mark.parametrize("norm, knn", list(itertools.product(sorted(diffusion.GRAPHS), diffusion.KNN_MODES)))
def test_the_memory_graph_and_targets_equal_a_dense_float64_recomputation_at_every_step(norm, knn):
    """M = 60, B = 12, k = 5 (the memory wraps every 5 steps), 45 steps in 3 epochs of 15, the teacher
    part emptied after each: at every step the kNN graph is each entry's k nearest among the entries
    in memory, and the batch's target is the dense float64 one."""
    k, w, size, batch = 5, 0.9, 60, 12
    criterion, settings = distilled_with_memory(k, w, norm, knn, size=size)
    memory = criterion.memory
    parameter = settings.options[TRANSITIONS[norm][1]]
    generator = torch.Generator().manual_seed(5)
    centres = torch.randn(4, D, dtype=torch.float64, generator=generator)
    refilled = 0
    for step in range(45):
        if step and step % 15 == 0:
            criterion.teacher_refreshed()
        slots = memory.push(torch.zeros(batch, D, dtype=torch.float64), torch.zeros(batch, dtype=torch.long),
                            clustered_teacher(generator, batch, centres))
        refilled += memory.refilled
        nodes, batch_nodes = node_positions(memory, slots)
        teacher = memory.teacher_embeddings[nodes]
        rows, cols = memory.teacher_edges(knn)
        edges = torch.zeros(len(nodes), len(nodes), dtype=torch.bool)
        edges[rows, cols] = True
        assert torch.equal(edges, dense_edges(teacher, k, knn)), step
        ours = diffusion.memory_soft_targets(teacher, batch_nodes, 0.5, settings, (rows, cols))
        expected = dense_memory_target(teacher, batch_nodes, edges, norm, parameter, w, 0.5)
        torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)
    assert refilled > 0  # lists lost their sure neighbours to evictions, and were refilled


def test_an_evicted_neighbour_is_replaced_by_the_nearest_entry_still_in_memory():
    """Memory of 4, k = 1, 2-D unit vectors at the angles below, pushed two at a time: after a and b
    are evicted, c's nearest is d (15 degrees away), not e (110 degrees away), which is all the
    batch that evicted a could offer."""
    angles = torch.tensor([0.0, 180.0, 5.0, 20.0, 115.0, 200.0], dtype=torch.float64).deg2rad()  # a b c d e f
    points = torch.stack([angles.cos(), angles.sin()], dim=1)
    memory = CrossBatchMemory(4, 2, teacher=True, k=1).double()
    for start in (0, 2, 4):
        memory.push(points[start:start + 2], torch.zeros(2, dtype=torch.long), points[start:start + 2])
    rows, cols = memory.teacher_edges()
    slot_names = dict(zip(memory.teacher_nodes().tolist(), "efcd"))  # e and f took a's and b's slots
    edges = {(slot_names[int(row)], slot_names[int(col)]) for row, col in zip(rows.tolist(), cols.tolist())}
    assert edges == {("c", "d"), ("d", "c"), ("e", "f"), ("f", "e")}


def test_a_memory_saved_in_the_earlier_format_resumes_with_exact_lists():
    """Checkpoints written before the lists were kept exact hold image indices and lists of k: they
    load, and the next push refills every list."""
    k = 3
    generator = torch.Generator().manual_seed(2)
    centres = torch.randn(3, D, dtype=torch.float64, generator=generator)
    memory = CrossBatchMemory(M, D, teacher=True, k=k).double()
    for _ in range(3):
        memory.push(torch.zeros(B, D, dtype=torch.float64), torch.zeros(B, dtype=torch.long),
                    clustered_teacher(generator, B, centres))
    earlier = memory.state_dict()
    earlier["images"] = torch.arange(M)
    earlier["neighbours"] = torch.randint(0, M, (M, k))  # lists of the earlier width, stale
    earlier["neighbour_similarities"] = torch.zeros(M, k, dtype=torch.float64)
    del earlier["stored"], earlier["neighbour_bound"]
    resumed = CrossBatchMemory(M, D, teacher=True, k=k).double()
    resumed.load_state_dict(earlier)
    assert int(resumed.stored) == M and torch.equal(resumed.teacher_embeddings, memory.teacher_embeddings)
    resumed.push(torch.zeros(B, D, dtype=torch.float64), torch.zeros(B, dtype=torch.long),
                 clustered_teacher(generator, B, centres))
    rows, cols = resumed.teacher_edges()
    edges = torch.zeros(M, M, dtype=torch.bool)
    edges[rows, cols] = True
    assert torch.equal(edges, dense_edges(resumed.teacher_embeddings[resumed.teacher_nodes()], k, "symmetric"))


def test_a_teacher_refresh_empties_the_teacher_part_and_a_step_without_the_teacher_leaves_it():
    memory = CrossBatchMemory(12, D, teacher=True, k=2).double()
    data = list(batches(lone=False))
    memory.push(data[0][0], data[0][1], data[0][0])
    memory.push(data[1][0], data[1][1], data[1][0])  # overwrites slots 0-3
    assert len(memory.teacher_nodes()) == 12
    memory.push(data[2][0], data[2][1], None)  # a step without the teacher (epoch 0)
    assert not memory.teacher_valid[torch.arange(4, 12)].any()
    assert not torch.isin(memory.neighbours[memory.teacher_nodes()], torch.arange(4, 12)).any()
    memory.refresh_teacher()
    assert len(memory.teacher_nodes()) == 0 and (memory.neighbours == -1).all()


@pytest.mark.parametrize("argv, fragment", [
    (["--loss", "proxyanchor", "--xbm_size", "100"], "proxyanchor compares no pairs of images"),
    (["--xbm_size", "-1"], "--xbm_size and --xbm_start must be 0 or more"),
    (["--xbm_size", "100", "--bs", "112"], "--xbm_size 100 cannot hold one batch of --bs 112"),
])
def test_memory_mistakes_are_one_line(argv, fragment, capsys):
    with pytest.raises(SystemExit):
        parameters.parse(argv)
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_a_memory_as_large_as_the_batch_is_taken():
    assert parameters.parse(["--xbm_size", "112", "--bs", "112"]).loss.xbm_size == 112


def test_memory_obdp_names_what_it_lacks_and_needs_a_memory_no_larger_than_the_split():
    settings = parameters.parse(["--xbm_size", "200", "--PSD", "--OBDP"])
    with pytest.raises(criteria.SettingError, match="add diffusion_k 10 and diffusion_solver iterative$"):
        criteria.select(settings.loss, distillation=settings.distillation)
    settings = parameters.parse(["--xbm_size", "200", "--PSD", "--OBDP", "--diffusion_k", "5"])
    with pytest.raises(criteria.SettingError, match="add diffusion_solver iterative$"):
        criteria.select(settings.loss, distillation=settings.distillation)
    with pytest.raises(criteria.SettingError, match="larger than the training split"):
        criteria.select(settings.loss, n_images=50)


def test_a_warm_up_without_a_memory_warns(capsys):
    parameters.parse(["--xbm_start", "100"])
    assert "warning: --xbm_start 100 without --xbm_size: there is no memory to warm up" in capsys.readouterr().err


def test_a_warm_up_that_outlasts_the_run_warns(capsys, tmp_path):
    """Digits' 901 training images make 75 batches of 12 an epoch: 150 steps in TINY's 2 epochs."""
    Run(parameters.parse([*TINY, "--save_path", str(tmp_path), "--xbm_size", "100", "--xbm_start", "150"]))
    assert "warning: --xbm_start 150 is not below the run's 150 steps (2 epochs of 75)" in capsys.readouterr().err
    Run(parameters.parse([*TINY, "--save_path", str(tmp_path), "--xbm_size", "100", "--xbm_start", "149"]))
    assert "warning" not in capsys.readouterr().err


def memory_section_commands():
    """The flags of every command of docs/method.md's "Beyond one batch" section."""
    section = METHOD.read_text().split("\n## Beyond one batch")[1].split("\n## ")[0]
    return [line.split()[2:] for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)
            for line in block.splitlines() if line.startswith("python main.py")]


def test_the_memory_section_shows_a_memory_and_obd_sd_over_it():
    commands = memory_section_commands()
    assert len(commands) == 2 and all("--xbm_size" in command for command in commands)
    assert "--OBDP" in commands[1]


@pytest.mark.slow
@pytest.mark.parametrize("command", memory_section_commands(), ids=["memory", "memory-OBD-SD"])
def test_the_memory_sections_commands_train_with_the_memory(command, two_steps, tmp_path):
    """TINY's digits run under the command's flags, one batch an epoch: both steps with the memory,
    the second carrying the distillation term (over the memory's graph with OBDP)."""
    assert program.run_main([*TINY, *command, "--save_path", tmp_path, "--savename", "run",
                             "--save_checkpoints", "last"]) == 0
    state = torch.load(tmp_path / "run" / "checkpoint_last.pth", weights_only=True)["criterion"]
    assert int(state["memory.steps"]) == 2 and int(state["memory.stored"]) == 40
    assert ("memory.neighbour_bound" in state) == ("--OBDP" in command)  # the teacher part and its kNN lists


def test_the_memory_benchmark_times_an_earlier_revision_beside_this_one(capsys):
    """benchmarks/README.md's command on a small memory: a row with both times and the refills."""
    revision = "ec1c0b4"  # the memory before its lists were kept exact, which benchmarks/README.md times
    present = subprocess.run(["git", "cat-file", "-e", f"{revision}:criteria/memory.py"], cwd=METHOD.parent.parent,
                             capture_output=True)
    if present.returncode != 0:
        pytest.skip(f"this checkout lacks revision {revision}")
    memory_diffusion.main(["--sizes", "448", "--dims", "8", "--repeats", "1", "--turnover", "--against", revision])
    header, row = capsys.readouterr().out.splitlines()[-2:]
    assert f"{revision} ms" in header and row.split()[:2] == ["8", "448"] and row.split()[6].endswith("x")


def test_the_memory_benchmark_names_a_revision_it_cannot_read(capsys):
    status, _, err = program.run_command(memory_diffusion.main, ["--against", "no-such-revision"], capsys)
    program.assert_one_line_error(status, err, "--against no-such-revision:")
