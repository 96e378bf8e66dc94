"""Any <root>/images/<class>/<image> tree: classes sorted by name, first half train, rest test."""
from datasets.layout import load_class_tree
from datasets.registry import register


@register("folder")
def load(source):
    return load_class_tree(source, "folder")
