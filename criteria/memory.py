"""Cross-batch memory (XBM: Wang, Zhang, Huang and Scott, "Cross-Batch Memory for Embedding
Learning", CVPR 2020), and OBDP over the memory's graph.

The memory is a FIFO queue of the last `size` training images: each one's student embedding (no
gradient), label and image index. Once `start` steps have passed, every step pushes the batch and
compares the batch's anchors with the whole memory, the batch included, never an image with its
own copy (the same image index): the rule of pytorch-metric-learning's CrossBatchMemory, whose
loss is this one on the same sequence of batches. Before `start`, the batch is compared with
itself and nothing is stored: the embeddings of a network that barely trained drift too fast to
be compared with later ones (the XBM paper's warm-up).

With OBDP, the memory also keeps each entry's teacher embedding, and the target is diffused over
the graph of the batch and the memory (docs/method.md, "OBDP over the memory"). The teacher part
holds only entries written under the current teacher: it is emptied when the teacher is
refreshed (after each epoch), because similarities of embeddings from two teachers belong to no
one graph. Its kNN lists are kept up to date as entries come and go, so a step costs O(|V| (k + B))
and never O(|V|^2).

Every piece of state is a buffer: it travels in the criterion's state_dict, so checkpoints hold
the memory and a resumed run goes on exactly.
"""
import torch
from torch import nn

from criteria.common import References

NO_IMAGE = -1


class CrossBatchMemory(nn.Module):
    """The queue: `size` entries of `embed_dim`; `teacher` keeps the teacher part with kNN lists of
    `k` neighbours (None: no lists, the dense graph is built on demand)."""

    def __init__(self, size, embed_dim, start=0, teacher=False, k=None):
        super().__init__()
        self.size, self.start, self.k = size, start, k
        self.register_buffer("embeddings", torch.zeros(size, embed_dim))
        self.register_buffer("labels", torch.zeros(size, dtype=torch.long))
        self.register_buffer("images", torch.full((size,), NO_IMAGE, dtype=torch.long))
        self.register_buffer("next_slot", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.teacher = teacher
        if teacher:
            self.register_buffer("teacher_embeddings", torch.zeros(size, embed_dim))
            self.register_buffer("teacher_valid", torch.zeros(size, dtype=torch.bool))
            if k is not None:
                self.register_buffer("neighbours", torch.full((size, k), NO_IMAGE, dtype=torch.long))
                self.register_buffer("neighbour_similarities", torch.full((size, k), float("-inf")))

    def begin_step(self):
        """Count a step; whether the memory is in use from this step on."""
        self.steps += 1
        return int(self.steps) > self.start

    @torch.no_grad()
    def push(self, batch, labels, images, teacher_batch=None):
        """Store a batch (oldest entries out first); returns the batch's slots."""
        slots = (self.next_slot + torch.arange(len(batch), device=batch.device)) % self.size
        self.embeddings[slots] = batch.detach().to(self.embeddings.dtype)
        self.labels[slots] = labels
        self.images[slots] = images
        self.next_slot.copy_((self.next_slot + len(batch)) % self.size)
        if self.teacher:
            self._push_teacher(slots, None if teacher_batch is None
                               else teacher_batch.detach().to(self.teacher_embeddings.dtype))
        return slots

    def references(self, images):
        """The memory as References for a batch of these image indices."""
        filled = self.images != NO_IMAGE
        return References(self.embeddings[filled], self.labels[filled],
                          images[:, None] == self.images[filled][None, :])

    def refresh_teacher(self):
        """The teacher changed: its entries belong to the old one."""
        if self.teacher:
            self.teacher_valid.zero_()
            if self.k is not None:
                self.neighbours.fill_(NO_IMAGE)
                self.neighbour_similarities.fill_(float("-inf"))

    def teacher_nodes(self):
        """The slots of the teacher part, in slot order."""
        return torch.nonzero(self.teacher_valid).squeeze(1)

    def _push_teacher(self, slots, teacher_batch):
        if self.k is not None:
            # Evicted entries leave every list they were in; a row keeps its other neighbours.
            leaving = torch.zeros(self.size, dtype=torch.bool, device=slots.device)
            leaving[slots] = self.teacher_valid[slots]
            stale = (self.neighbours >= 0) & leaving[self.neighbours.clamp_min(0)]
            self.neighbours.masked_fill_(stale, NO_IMAGE)
            self.neighbour_similarities.masked_fill_(stale, float("-inf"))
            self.neighbours[slots] = NO_IMAGE
            self.neighbour_similarities[slots] = float("-inf")
        self.teacher_valid[slots] = teacher_batch is not None  # a step without the teacher overwrites its entries
        if teacher_batch is None:
            return
        self.teacher_embeddings[slots] = teacher_batch
        if self.k is not None:
            self._update_neighbours(slots, teacher_batch)

    def _update_neighbours(self, slots, teacher_batch):
        """Merge the new entries into every row's kNN list and give the new rows theirs: the lists
        stay the exact k nearest among the entries present since the last refresh, O(M (k + B))."""
        nodes = self.teacher_nodes()
        similarities = self.teacher_embeddings[nodes] @ teacher_batch.T  # |V| x B
        new_rows = torch.zeros(self.size, dtype=torch.bool, device=slots.device)
        new_rows[slots] = True
        is_self = nodes[:, None] == slots[None, :]
        similarities = similarities.masked_fill(is_self, float("-inf"))
        # Old rows: their list plus the batch's columns.
        old = nodes[~new_rows[nodes]]
        candidates = torch.cat([self.neighbour_similarities[old], similarities[~new_rows[nodes]]], dim=1)
        indices = torch.cat([self.neighbours[old], slots.expand(len(old), -1)], dim=1)
        self._keep_top(old, candidates, indices)
        # New rows: every entry of the teacher part.
        self._keep_top(slots, similarities.T, nodes.expand(len(slots), -1))

    def _keep_top(self, rows, candidates, indices):
        k = min(self.k, candidates.shape[1])
        values, order = candidates.topk(k, dim=1)
        chosen = indices.gather(1, order).masked_fill(torch.isinf(values), NO_IMAGE)
        self.neighbours[rows] = NO_IMAGE
        self.neighbour_similarities[rows] = float("-inf")
        self.neighbours[rows, :k] = chosen
        self.neighbour_similarities[rows, :k] = values

    def teacher_edges(self, mode="symmetric"):
        """(rows, cols) of the kNN graph of the teacher part, in node positions (teacher_nodes()
        order), symmetrised by `mode` as diffusion's kNN graphs are, sorted by row then column."""
        nodes = self.teacher_nodes()
        position = torch.full((self.size,), NO_IMAGE, dtype=torch.long, device=nodes.device)
        position[nodes] = torch.arange(len(nodes), device=nodes.device)
        chosen = self.neighbours[nodes]
        valid = chosen >= 0
        rows = torch.arange(len(nodes), device=nodes.device)[:, None].expand_as(chosen)[valid]
        cols = position[chosen[valid]]
        size = len(nodes)
        forward, reverse = rows * size + cols, cols * size + rows
        if mode == "symmetric":
            keys = torch.unique(torch.cat([forward, reverse]))
        else:
            keys = torch.unique(forward[torch.isin(reverse, forward)])
        return keys // size, keys % size
