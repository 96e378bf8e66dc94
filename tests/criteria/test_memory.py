"""The cross-batch memory against pytorch-metric-learning's CrossBatchMemory, and OBDP over the
memory's graph against today's OBDP and a dense float64 re-computation."""
import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning.miners import BaseMiner

import criteria
import diffusion
import parameters
from criteria import CrossBatchMemory, Distillation, SelfDistilledCriterion
from criteria.common import References
from criteria.miners import DistanceWeighted
from criteria.multisimilarity import MultiSimilarity

B, D, M, STEPS = 8, 6, 20, 4  # the memory wraps around in the third step


def batches(normalise):
    generator = torch.Generator().manual_seed(0)
    for step in range(STEPS):
        embeddings = torch.randn(B, D, dtype=torch.float64, generator=generator)
        if normalise:
            embeddings = torch.nn.functional.normalize(embeddings, dim=1)
        labels = torch.randint(0, 3, (B,), generator=generator)
        yield embeddings, labels, torch.arange(step * B, (step + 1) * B)  # every image once: PML's rule


class SameTriplets(BaseMiner):
    """PML's side of the comparison: the triplets our miner draws, from the same seed, on PML's memory."""

    def __init__(self, miner, wrapper, seed):
        super().__init__()
        self.miner, self.wrapper, self.seed = miner, wrapper, seed

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        own = torch.zeros(len(embeddings), len(ref_emb), dtype=torch.bool)
        own[torch.arange(len(embeddings)), self.wrapper.curr_batch_idx] = True
        torch.manual_seed(self.seed[0])
        return self.miner(embeddings, labels, References(ref_emb, ref_labels, own))


def compare(ours_base, pml_loss, pml_miner=None, normalise=False):
    ours = SelfDistilledCriterion(ours_base, memory=CrossBatchMemory(M, D).double())
    seed = [0]
    theirs = pml_losses.CrossBatchMemory(pml_loss, D, memory_size=M)
    if pml_miner == "same":
        theirs.miner = SameTriplets(ours_base.miner, theirs, seed)
    elif pml_miner is not None:
        theirs.miner = pml_miner
    for step, (embeddings, labels, images) in enumerate(batches(normalise)):
        seed[0] = step
        mine = embeddings.clone().requires_grad_()
        torch.manual_seed(step)
        our_loss = ours(mine, labels, images=images)
        their_input = embeddings.clone().requires_grad_()
        their_loss = theirs(their_input, labels)
        torch.testing.assert_close(our_loss, their_loss, rtol=1e-10, atol=1e-12)
        our_loss.backward(), their_loss.backward()
        torch.testing.assert_close(mine.grad, their_input.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ours.memory.embeddings, theirs.embedding_memory)
        assert our_loss > 0


def test_multisimilarity_with_memory_equals_pytorch_metric_learning():
    # A margin this wide keeps every pair, so every anchor counts in both averages.
    base = MultiSimilarity(pos_weight=2.0, neg_weight=40.0, margin=10.0, thresh=0.5)
    # Our MS takes the embeddings as they come (the _normalize networks normalise them): PML's dot product.
    dot = pml_distances.DotProductSimilarity(normalize_embeddings=False)
    pml = pml_losses.MultiSimilarityLoss(alpha=2.0, beta=40.0, base=0.5, distance=dot)
    compare(base, pml, pml_miners.MultiSimilarityMiner(epsilon=10.0, distance=dot), normalise=True)


def test_contrastive_with_a_miner_and_memory_equals_pytorch_metric_learning():
    base = criteria.CRITERIA.get("contrastive")(miner=DistanceWeighted(0.5), pos_margin=0.0, neg_margin=1.0)
    pml = pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0, reducer=pml_reducers.MeanReducer(),
                                     distance=pml_distances.LpDistance(normalize_embeddings=False))
    compare(base, pml, "same")


def test_triplet_with_a_miner_and_memory_equals_pytorch_metric_learning():
    base = criteria.CRITERIA.get("triplet")(miner=DistanceWeighted(0.5), margin=0.2)
    pml = pml_losses.TripletMarginLoss(margin=0.2, reducer=pml_reducers.MeanReducer(),
                                       distance=pml_distances.LpDistance(normalize_embeddings=False, power=2))
    compare(base, pml, "same")


def test_multisimilarity_against_memory_matches_a_float64_loop():
    """The released rule, anchor by anchor, on the references: pairs kept by the margin, anchors
    without a kept positive and negative skipped; an image never paired with its own copy."""
    generator = torch.Generator().manual_seed(3)
    batch = torch.nn.functional.normalize(torch.randn(6, D, dtype=torch.float64, generator=generator), dim=1)
    refs = torch.nn.functional.normalize(torch.randn(15, D, dtype=torch.float64, generator=generator), dim=1)
    labels, ref_labels = torch.tensor([0, 0, 1, 1, 2, 2]), torch.randint(0, 3, (15,), generator=generator)
    images, ref_images = torch.arange(6), torch.cat([torch.arange(6), torch.arange(100, 109)])
    refs[:6] = batch  # the batch is in the memory, as after a push
    ref_labels[:6] = labels
    references = References(refs, ref_labels, images[:, None] == ref_images[None])
    batch.requires_grad_()
    ours = MultiSimilarity()(batch, labels, references)
    total, kept = 0.0, 0
    for i in range(6):
        similarity = refs @ batch[i]
        positive = [j for j in range(15) if ref_labels[j] == labels[i] and ref_images[j] != images[i]]
        negative = [j for j in range(15) if ref_labels[j] != labels[i]]
        hardest_positive = min(similarity[j].item() for j in positive)
        hardest_negative = max(similarity[j].item() for j in negative)
        negative = [j for j in negative if similarity[j] + 0.1 > hardest_positive]
        positive = [j for j in positive if similarity[j] - 0.1 < hardest_negative]
        if not positive or not negative:
            continue
        kept += 1
        total = total + torch.log1p(sum(torch.exp(-2.0 * (similarity[j] - 0.5)) for j in positive)) / 2.0
        total = total + torch.log1p(sum(torch.exp(40.0 * (similarity[j] - 0.5)) for j in negative)) / 40.0
    expected = total / kept
    assert kept > 0
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(torch.autograd.grad(ours, batch)[0], torch.autograd.grad(expected, batch)[0])


@pytest.mark.parametrize("name", sorted(name for name, entry in criteria.CRITERIA.items() if entry.takes_references))
def test_every_memory_loss_on_its_first_batch_has_the_batchs_value(name):
    """An empty memory holds just the batch: the same pairs, the same value (the gradient differs: the
    memory's copies carry none)."""
    settings = parameters.parse(["--loss", name, "--embed_dim", str(D), "--xbm_size", str(M)])
    embeddings, labels, images = next(batches(normalise=True))
    alone = criteria.select(parameters.parse(["--loss", name, "--embed_dim", str(D)]).loss, embed_dim=D).double()
    with_memory = criteria.select(settings.loss, embed_dim=D).double()
    with_memory.base.load_state_dict(alone.base.state_dict())
    torch.manual_seed(0)
    expected = alone(embeddings, labels)
    torch.manual_seed(0)
    torch.testing.assert_close(with_memory(embeddings, labels, images=images), expected)


def test_memory_is_unused_and_empty_during_warm_up():
    memory = CrossBatchMemory(M, D, start=2)
    criterion = SelfDistilledCriterion(MultiSimilarity(), memory=memory)
    for step, (embeddings, labels, images) in enumerate(batches(normalise=True)):
        criterion(embeddings.float(), labels, images=images)
        assert int((memory.images >= 0).sum()) == (0 if step < 2 else min((step - 1) * B, M))


def distilled_with_memory(k, w=0.5):
    settings = diffusion.Settings(w=w, k=k, solver="solve" if k is None else "iterative", options={"tol": 1e-12})
    distillation = Distillation(PSD=True, OBDP=True, kd_tau=0.5, kd_lambda=1.0, diffusion=settings)
    memory = CrossBatchMemory(M, D, teacher=True, k=k).double()
    return SelfDistilledCriterion(MultiSimilarity(), distillation, n_epochs=2, memory=memory), settings


def test_memory_obdp_with_an_empty_memory_and_the_dense_graph_is_todays_obdp_exactly():
    criterion, settings = distilled_with_memory(k=None)
    embeddings, labels, images = next(batches(normalise=True))
    teacher = embeddings.flip(0)
    criterion(embeddings, labels, teacher_batch=teacher, epoch=1, images=images)
    slots = torch.arange(B)
    ours = diffusion.memory_soft_targets(criterion.memory.teacher_embeddings[criterion.memory.teacher_nodes()],
                                         slots, 0.5, settings)
    assert torch.equal(ours, diffusion.soft_targets(teacher, kd_tau=0.5, diffusion=settings))
    kd = criteria.distillation_loss(embeddings, teacher, 0.5, settings)
    criterion.memory.refresh_teacher()
    criterion.memory.next_slot.zero_()
    torch.testing.assert_close(criterion(embeddings, labels, teacher_batch=teacher, epoch=1, images=images),
                               MultiSimilarity()(embeddings, labels) + 0.5 * 0.25 * kd, rtol=0, atol=0)


def dense_memory_target(nodes, batch_nodes, k, w, kd_tau):
    """The memory's target from scratch in float64: every node's k nearest other nodes, the edges
    made symmetric, P = row_softmax of their similarities, Y = (1 - w)(I - wP)^-1 X."""
    similarities = nodes @ nodes.T
    n = len(nodes)
    adjacency = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        order = [j for j in similarities[i].argsort(descending=True).tolist() if j != i][:k]
        adjacency[i, order] = True
    adjacency |= adjacency.T.clone()
    logits = similarities.masked_fill(~adjacency, float("-inf"))
    transition = torch.softmax(logits, dim=1)
    spread = torch.softmax(nodes @ nodes[batch_nodes].T / kd_tau, dim=1)
    diffused = (1 - w) * torch.linalg.solve(torch.eye(n, dtype=torch.float64) - w * transition, spread)
    return diffused[batch_nodes]


def test_memory_obdp_targets_equal_a_dense_float64_recomputation():
    k, w = 3, 0.5
    criterion, settings = distilled_with_memory(k, w)
    memory = criterion.memory
    generator = torch.Generator().manual_seed(5)
    # A memory filled over two steps, then a third step: the neighbour lists were merged twice.
    for step, (embeddings, labels, images) in enumerate(batches(normalise=True)):
        if step == 2:
            break
        teacher = torch.nn.functional.normalize(torch.randn(B, D, dtype=torch.float64, generator=generator), dim=1)
        slots = memory.push(embeddings, labels, images, teacher)
    nodes = memory.teacher_nodes()
    position = torch.empty(M, dtype=torch.long)
    position[nodes] = torch.arange(len(nodes))
    ours = diffusion.memory_soft_targets(memory.teacher_embeddings[nodes], position[slots], 0.5, settings,
                                         memory.teacher_edges())
    expected = dense_memory_target(memory.teacher_embeddings[nodes], position[slots], k, w, 0.5)
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)


def test_a_teacher_refresh_empties_the_teacher_part_and_eviction_leaves_the_lists():
    memory = CrossBatchMemory(12, D, teacher=True, k=2).double()
    data = list(batches(normalise=True))
    memory.push(data[0][0], data[0][1], data[0][2], data[0][0])
    assert len(memory.teacher_nodes()) == B
    memory.push(data[1][0], data[1][1], data[1][2], data[1][0])  # overwrites slots 0-3
    assert len(memory.teacher_nodes()) == 12
    # Every listed neighbour is the entry now in its slot (none points at an evicted one), never the row itself.
    for row in memory.teacher_nodes().tolist():
        listed = memory.neighbours[row] >= 0
        neighbours = memory.neighbours[row][listed]
        assert listed.any() and row not in neighbours.tolist()
        torch.testing.assert_close(memory.neighbour_similarities[row][listed],
                                   memory.teacher_embeddings[neighbours] @ memory.teacher_embeddings[row])
    memory.push(data[2][0], data[2][1], data[2][2], None)  # a step without the teacher (epoch 0)
    assert not memory.teacher_valid[torch.arange(4, 12)].any()
    memory.refresh_teacher()
    assert len(memory.teacher_nodes()) == 0 and (memory.neighbours == -1).all()


@pytest.mark.parametrize("argv, fragment", [
    (["--loss", "proxyanchor", "--xbm_size", "100"], "proxyanchor compares no pairs of images"),
    (["--xbm_size", "-1"], "--xbm_size and --xbm_start must be 0 or more"),
])
def test_memory_mistakes_are_one_line(argv, fragment, capsys):
    with pytest.raises(SystemExit):
        parameters.parse(argv)
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_memory_obdp_needs_a_knn_graph_and_a_memory_no_larger_than_the_split():
    settings = parameters.parse(["--xbm_size", "100", "--PSD", "--OBDP"])
    with pytest.raises(criteria.SettingError, match="add diffusion_k 10 and diffusion_solver iterative"):
        criteria.select(settings.loss, distillation=settings.distillation)
    with pytest.raises(criteria.SettingError, match="larger than the training split"):
        criteria.select(settings.loss, n_images=50)
