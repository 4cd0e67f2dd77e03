"""YAML that refuses a key repeated in one mapping (PyYAML keeps the last one silently)."""

from __future__ import annotations

import yaml


class RepeatedKeyError(yaml.YAMLError):
    """A mapping in the YAML names the same key twice (YAML forbids it; PyYAML keeps the last silently)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping, naming it and both lines.

    >>> yaml.load("index: {name: a}\\nindex: {name: b}\\n", Loader=UniqueKeyLoader)
    Traceback (most recent call last):
    ...
    anchorprune.yaml_keys.RepeatedKeyError: repeats the key 'index' (line 1 and line 2): the second would silently replace the first; merge them into one
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[object, int] = {}
            for key_node, _ in node.value:
                try:
                    key = self.construct_object(key_node, deep=True)
                    hash(key)
                except (TypeError, yaml.YAMLError):
                    continue                    # the base class reports an unhashable key
                line = key_node.start_mark.line + 1
                if key in seen and key != "<<":
                    raise RepeatedKeyError(f"repeats the key {key!r} (line {seen[key]} and line {line}): the second "
                                           "would silently replace the first; merge them into one")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)
