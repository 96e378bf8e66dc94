"""Cross-batch memory (XBM: Wang, Zhang, Huang and Scott, "Cross-Batch Memory for Embedding
Learning", CVPR 2020), and OBDP over the memory's graph.

The memory is a FIFO queue of the last `size` training images: each one's student embedding (no
gradient) and label. Once `start` steps have passed, every step pushes the batch and compares the
batch's anchors with the whole memory, the batch included, never an anchor with its own entry (the
copy of it just stored), as pytorch-metric-learning's CrossBatchMemory does, whose loss is this one
on the same sequence of batches (docs/method.md says what the losses and miners do with the own
entry). Before `start`, the batch is compared with itself and nothing is stored: the embeddings of
a network that barely trained drift too fast to be compared with later ones (the XBM paper's
warm-up).

With OBDP, the memory also keeps each entry's teacher embedding, and the target is diffused over
the graph of the batch and the memory (docs/method.md, "OBDP over the memory"). The teacher part
holds only entries written under the current teacher: it is emptied when the teacher is
refreshed (after each epoch), because similarities of embeddings from two teachers belong to no
one graph. Each entry's list of its k nearest entries is exact at every step: a push merges the
batch into every list and gives the batch's entries theirs; an evicted entry leaves the lists it
was in, and a list that no longer holds its k nearest for sure is refilled from the whole memory.
Each list keeps 2k entries, k of them spare, with a bound on every entry it does not hold, so that
a refill is rare (`refilled` counts them): a step costs O(|V| (k + B) D), never O(|V|^2).

Every piece of state is a buffer: it travels in the criterion's state_dict, so checkpoints hold
the memory and a resumed run goes on exactly.
"""
import torch
from torch import nn

from criteria.common import References

NO_ENTRY = -1
LIST_WIDTH = 2  # a list holds LIST_WIDTH * k entries: k nearest and spares that stand in after evictions
REFILL_ROWS = 4096  # rows refilled at once: a refill of the whole memory never holds |V|^2 similarities


class CrossBatchMemory(nn.Module):
    """The queue: `size` entries of `embed_dim`; `teacher` keeps the teacher part with kNN lists of
    `k` neighbours (None: no lists, the dense graph is built on demand)."""

    def __init__(self, size, embed_dim, start=0, teacher=False, k=None):
        super().__init__()
        self.size, self.start, self.k = size, start, k
        self.register_buffer("embeddings", torch.zeros(size, embed_dim))
        self.register_buffer("labels", torch.zeros(size, dtype=torch.long))
        self.register_buffer("stored", torch.zeros((), dtype=torch.long))  # slots 0 .. stored - 1 hold entries
        self.register_buffer("next_slot", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.teacher = teacher
        self.refilled = 0  # lists refilled from the whole memory at the last push
        if teacher:
            self.register_buffer("teacher_embeddings", torch.zeros(size, embed_dim))
            self.register_buffer("teacher_valid", torch.zeros(size, dtype=torch.bool))
            if k is not None:
                width = LIST_WIDTH * k
                # Each row's list, most similar first; every entry it does not hold is at most as similar as
                # its bound, so the listed entries at or above the bound are the row's nearest for sure.
                self.register_buffer("neighbours", torch.full((size, width), NO_ENTRY, dtype=torch.long))
                self.register_buffer("neighbour_similarities", torch.full((size, width), float("-inf")))
                self.register_buffer("neighbour_bound", torch.full((size,), float("-inf")))
        self.register_load_state_dict_pre_hook(_read_earlier_format)

    def begin_step(self):
        """Count a step; whether the memory is in use from this step on."""
        self.steps += 1
        return int(self.steps) > self.start

    @torch.no_grad()
    def push(self, batch, labels, teacher_batch=None):
        """Store a batch (oldest entries out first); returns the batch's slots."""
        if len(batch) > self.size:
            raise ValueError(f"a batch of {len(batch)} does not fit a memory of {self.size} entries")
        slots = (self.next_slot + torch.arange(len(batch), device=batch.device)) % self.size
        self.embeddings[slots] = batch.detach().to(self.embeddings.dtype)
        self.labels[slots] = labels
        self.next_slot.copy_((self.next_slot + len(batch)) % self.size)
        self.stored.copy_(torch.clamp(self.stored + len(batch), max=self.size))
        if self.teacher:
            self._push_teacher(slots, None if teacher_batch is None
                               else teacher_batch.detach().to(self.teacher_embeddings.dtype))
        return slots

    def references(self, slots):
        """The memory as References for the batch just pushed into `slots`: every stored entry in
        slot order (the order of pytorch-metric-learning's memory), each anchor's own entry marked."""
        stored = int(self.stored)
        entries = torch.arange(stored, device=slots.device)
        return References(self.embeddings[:stored], self.labels[:stored], slots[:, None] == entries[None, :])

    def refresh_teacher(self):
        """The teacher changed: its entries belong to the old one."""
        if self.teacher:
            self.teacher_valid.zero_()
            if self.k is not None:
                self.neighbours.fill_(NO_ENTRY)
                self.neighbour_similarities.fill_(float("-inf"))
                self.neighbour_bound.fill_(float("-inf"))

    def teacher_nodes(self):
        """The slots of the teacher part, in slot order."""
        return torch.nonzero(self.teacher_valid).squeeze(1)

    def _push_teacher(self, slots, teacher_batch):
        self.teacher_valid[slots] = teacher_batch is not None  # a step without the teacher overwrites its entries
        if teacher_batch is not None:
            self.teacher_embeddings[slots] = teacher_batch
        if self.k is not None:
            self._update_neighbours(slots, teacher_batch is not None)

    def _update_neighbours(self, slots, added):
        """Keep every row's list exact after the entries at `slots` were replaced (by teacher entries
        when `added`)."""
        leaving = torch.zeros(self.size, dtype=torch.bool, device=slots.device)
        leaving[slots] = True
        evicted = (self.neighbours >= 0) & leaving[self.neighbours.clamp_min(0)]
        self.neighbours.masked_fill_(evicted, NO_ENTRY)
        self.neighbour_similarities.masked_fill_(evicted, float("-inf"))
        nodes = self.teacher_nodes()
        old = nodes[~leaving[nodes]]
        width = self.neighbours.shape[1]
        candidates, indices = self.neighbour_similarities[old], self.neighbours[old]
        if added:
            batch_similarities = self.teacher_embeddings[nodes] @ self.teacher_embeddings[slots].T  # |V| x B
            candidates = torch.cat([candidates, batch_similarities[~leaving[nodes]]], dim=1)
            indices = torch.cat([indices, slots.expand(len(old), -1)], dim=1)
        # The old rows: their lists and the batch, most similar first; a candidate that does not fit
        # raises the bound on what the list leaves out.
        values, order = candidates.topk(min(width + 1, candidates.shape[1]), dim=1)
        chosen = indices.gather(1, order).masked_fill(torch.isinf(values), NO_ENTRY)
        if values.shape[1] > width:
            self.neighbour_bound[old] = torch.maximum(self.neighbour_bound[old], values[:, width])
        self.neighbours[old], self.neighbour_similarities[old] = chosen[:, :width], values[:, :width]
        needed = min(self.k, len(nodes) - 1)
        certain = (self.neighbour_similarities[old] >= self.neighbour_bound[old, None]) & (self.neighbours[old] >= 0)
        unsure = old[certain.sum(dim=1) < needed]
        self.refilled = len(unsure)
        if len(unsure):
            self._refill(unsure, nodes)
        self._clear(slots)
        if added:
            self._fill(slots, batch_similarities.T, nodes)

    def _refill(self, rows, nodes):
        """Lists of `rows` from their similarities to every node, REFILL_ROWS rows at a time."""
        for start in range(0, len(rows), REFILL_ROWS):
            part = rows[start:start + REFILL_ROWS]
            self._fill(part, self.teacher_embeddings[part] @ self.teacher_embeddings[nodes].T, nodes)

    def _fill(self, rows, similarities, nodes):
        """Give `rows` their lists from their `similarities` to `nodes` (rows x |V|), themselves left out."""
        width = self.neighbours.shape[1]
        similarities = similarities.masked_fill(rows[:, None] == nodes[None, :], float("-inf"))
        values, order = similarities.topk(min(width + 1, len(nodes)), dim=1)
        self._clear(rows)
        kept = min(width, values.shape[1])
        self.neighbours[rows, :kept] = nodes[order[:, :kept]].masked_fill(torch.isinf(values[:, :kept]), NO_ENTRY)
        self.neighbour_similarities[rows, :kept] = values[:, :kept]
        if values.shape[1] > width:
            self.neighbour_bound[rows] = values[:, width]

    def _clear(self, rows):
        self.neighbours[rows] = NO_ENTRY
        self.neighbour_similarities[rows] = float("-inf")
        self.neighbour_bound[rows] = float("-inf")

    def teacher_edges(self, mode="symmetric"):
        """(rows, cols) of the kNN graph of the teacher part, in node positions (teacher_nodes()
        order), symmetrised by `mode` as diffusion's kNN graphs are, sorted by row then column."""
        nodes = self.teacher_nodes()
        position = torch.full((self.size,), NO_ENTRY, dtype=torch.long, device=nodes.device)
        position[nodes] = torch.arange(len(nodes), device=nodes.device)
        chosen = self.neighbours[nodes, :self.k]
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



def _read_earlier_format(memory, state, prefix, *args):
    """A memory saved in the earlier format (image indices, lists of k without bounds): its entries
    are kept and every list is refilled at the next push."""
    images = state.pop(prefix + "images", None)
    if images is None:
        return
    state[prefix + "stored"] = (images != NO_ENTRY).sum()
    if memory.teacher and memory.k is not None:
        state[prefix + "neighbours"] = torch.full_like(memory.neighbours, NO_ENTRY)
        state[prefix + "neighbour_similarities"] = torch.full_like(memory.neighbour_similarities, float("-inf"))
        state[prefix + "neighbour_bound"] = torch.full_like(memory.neighbour_bound, float("inf"))  # nothing is sure
