"""registry.Registry: one table of names per plugin kind; what every kind's table guarantees."""
import pytest

import architectures
import criteria
import datasampler
import datasets
import evaluation.metrics
from registry import Registry, UnknownName


def test_a_name_is_registered_once():
    table = Registry("widget")
    table.register("a", 1)
    with pytest.raises(ValueError, match="two widgets are registered as 'a'"):
        table.register("a", 2)


def test_an_unknown_name_lists_the_names_there_are():
    table = Registry("widget")

    @table.register("b")
    def build_b():
        return "b"

    table.register("a", "entry")
    assert table.names() == ["a", "b"] and table.get("b") is build_b
    with pytest.raises(UnknownName, match="^unknown widget 'c'; choose one of a, b$"):
        table.get("c")
    assert Registry("widget", order=None).names() == []


@pytest.mark.parametrize("table", [criteria.CRITERIA, criteria.MINERS, architectures.BACKBONES, architectures.HEADS,
                                   datasets.LOADERS, datasampler.SAMPLERS, evaluation.metrics.METRICS,
                                   criteria.distances.DISTANCES])
def test_every_plugin_kind_uses_the_registry(table):
    assert isinstance(table, Registry) and table.names()


@pytest.mark.parametrize("name", criteria.CRITERIA.names())
def test_every_loss_builds_as_a_plain_library_call(name):
    loss = criteria.CRITERIA[name]()
    assert isinstance(loss, criteria.Criterion)
    assert all(getattr(loss, param, default) is not None for param, default in loss.hyperparameters.items())


@pytest.mark.parametrize("name", criteria.MINERS.names())
def test_every_miner_builds_bare_and_says_what_it_returns(name):
    miner = criteria.MINERS[name]()
    assert miner.returns in ("triplets", "pairs", "sets")
