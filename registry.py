"""The one name -> entry table that every plugin kind uses: losses, miners, backbones, heads,
datasets, batch samplers, metrics, diffusion graphs and solvers, optimisers, learning-rate
schedules and evaluation protocols.

    LOSSES = Registry("loss")

    @LOSSES.register("multisimilarity")
    class MultiSimilarity(...): ...

    LOSSES.get("multisimilrity")  # UnknownName: unknown loss 'multisimilrity'; choose one of ...

A name registered twice is refused at import, so two plugins never shadow each other silently.
"""
import inspect

from errors import UserError


class UnknownName(UserError, ValueError):
    """A name no entry of the registry has; the message lists the names there are."""


class Registry(dict):
    """Entries by name, filled by `register`. `names()` is sorted by `order` (default: alphabetical;
    None keeps the order of registration)."""

    def __init__(self, kind, order=sorted):
        super().__init__()
        self.kind = kind
        self.order = order

    def register(self, name, entry=None):
        """Add `entry` under `name`; without an entry, a decorator that adds what it decorates."""
        if entry is not None:
            self._add(name, entry)
            return entry

        def add(decorated):
            self._add(name, decorated)
            return decorated

        return add

    def _add(self, name, entry):
        if name in self:
            raise ValueError(f"two {self.kind}s are registered as {name!r}: {self[name]!r} and {entry!r}")
        self[name] = entry

    def names(self):
        return list(self) if self.order is None else self.order(self)

    def get(self, name):
        """The entry of `name`, or UnknownName listing the valid names."""
        if name not in self:
            raise UnknownName(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")
        return self[name]


def keyword_defaults(cls, supplied=()):
    """{name: default} of the constructor arguments of `cls` that have a default and are not
    `supplied` by the library: a plugin's tunable parameters, which the commands turn into flags."""
    return {name: parameter.default for name, parameter in inspect.signature(cls).parameters.items()
            if name not in supplied and parameter.default is not inspect.Parameter.empty}
