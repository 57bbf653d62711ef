"""Reading site-map YAML: safe, without YAML 1.1 base-60 numbers, with repeated keys noted.

`read_yaml` gives the top-level mapping, or raises `SitemapError` with one problem naming the
line and column of a syntax error, an empty file, or a document that is not a mapping.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from sitemap._checks import Problem, SitemapError
from sitemap._values import describe


class _Loader(yaml.SafeLoader):
    """Safe YAML without base-60 numbers (so `17:00` stays text), noting repeated keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.repeated: list[tuple[str, int, int]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    mark = key_node.start_mark
                    self.repeated.append((key_node.value, mark.line + 1, mark.column + 1))
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT,
    re.compile(r"^[-+]?(?:0|[1-9][0-9_]*|0[0-7_]+|0x[0-9a-fA-F_]+|0b[01_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def read_yaml(text: str, source: str) -> tuple[dict[Any, Any], list[Problem]]:
    """The top-level mapping and repeated-key problems; raises `SitemapError` if unreadable."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise SitemapError(
            [
                Problem(
                    source,
                    f"line {line}, column {column}",
                    "",
                    f"YAML syntax error: character {exc.character:#06x} is not allowed",
                )
            ]
        ) from None
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark, context = exc.problem_mark or exc.context_mark, exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "unreadable"
        if exc.context and context and context is not mark:
            what += f" ({exc.context} at line {context.line + 1}, column {context.column + 1})"
        raise SitemapError([Problem(source, where, "", f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as exc:
        raise SitemapError([Problem(source, "", "", f"YAML syntax error: {exc}")]) from None
    finally:
        loader.dispose()
    if data is None:
        raise SitemapError(
            [
                Problem(
                    source,
                    "line 1, column 1",
                    "",
                    "empty file; expected a mapping with at least 'sites'",
                )
            ]
        )
    if not isinstance(data, dict):
        assert node is not None  # data came from it
        mark = node.start_mark
        raise SitemapError(
            [
                Problem(
                    source,
                    f"line {mark.line + 1}, column {mark.column + 1}",
                    "",
                    f"expected a mapping at the top level, got {describe(data)}",
                )
            ]
        )
    repeated = [
        Problem(source, f"line {line}, column {col}", key, f"duplicate key '{key}' in one mapping")
        for key, line, col in loader.repeated
    ]
    return data, repeated
