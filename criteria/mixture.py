"""`--loss a+b --loss_weights w_a w_b`: losses together, L_dml = sum_i w_i L_i, as
pytorch-metric-learning's MultipleLosses(losses, weights=...) computes it.

Each member is the criterion its own name builds (criteria.select): its `--loss_<name>_<param>`
flags, its own miner, its own learnt parameters at its own lr. The self-distillation term is added
once, to the sum (criteria/self_distillation.py wraps the mixture). With a cross-batch memory every
member compares the batch with it, so a mixture takes one only when all its members take references.
"""
from torch import nn

SEPARATOR = "+"


class Mixture(nn.Module):
    """sum_i weights[i] * members[i](batch, labels), the members named `names`."""

    def __init__(self, names, members, weights):
        super().__init__()
        if not len(names) == len(members) == len(weights):
            raise ValueError(f"{len(names)} names, {len(members)} members and {len(weights)} weights")
        self.names = tuple(names)
        self.members = nn.ModuleList(members)
        self.weights = tuple(float(weight) for weight in weights)

    @property
    def takes_references(self):
        return all(getattr(member, "takes_references", False) for member in self.members)

    def forward(self, batch, labels, references=None):
        total = 0
        for member, weight in zip(self.members, self.weights):
            value = member(batch, labels) if references is None else member(batch, labels, references)
            total = total + value * weight  # MultipleLosses' order of operations
        return total

    def optim_groups(self):
        """Each member's learnt parameters in a group of their own, at that member's lr."""
        return [group for member in self.members if hasattr(member, "optim_groups")
                for group in member.optim_groups()]

    def extra_repr(self):
        return ", ".join(f"{weight:g} x {name}" for name, weight in zip(self.names, self.weights))
