"""CARS196: <root>/images/<class folder>/*.jpg; folders sorted by name, first half train, rest test."""
from datasets.layout import load_class_tree
from datasets.registry import register


@register("cars196")
def load(source):
    return load_class_tree(source, "cars196", ("cars196",))
