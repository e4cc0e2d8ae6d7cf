"""Reading a YAML file strictly: UTF-8 text, no control characters, each key once per mapping.

Used for the config file and the web configuration file. A problem never quotes the file's
content, only the parser's own words and a position: the file may hold secrets.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

from ometer_exporter.config.checks import Checker, show, show_path


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that records duplicate keys: plain YAML lets the later value win silently."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` overrides on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the base class reports it
            if key in seen:
                mark = key_node.start_mark
                self.duplicates.append(
                    f"line {mark.line + 1}, column {mark.column + 1}: duplicate key {show(key)} "
                    "(the later value would silently win); allowed: each key once per mapping"
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(checker: Checker, path: str, origin: str, what: str = "config file") -> object:
    """The file's document; None (with the problem recorded) when it cannot be used.

    `origin` says where the path came from (``flag --config.file``); `what` names the file.
    An empty file, or one with only comments, is None too, with no problem.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        checker.add(
            origin,
            f"cannot read {what} {show_path(path)}: {error.strerror or error}; "
            "allowed: a readable YAML file",
        )
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        checker.add(origin, f"{what} {show_path(path)} is not UTF-8 text; allowed: UTF-8 text")
        return None
    return _parse(checker, text, path, origin, what)


def _parse(checker: Checker, text: str, path: str, origin: str, what: str) -> object:
    try:
        loader = _StrictLoader(text)  # the reader rejects control characters right here
    except yaml.reader.ReaderError as error:
        checker.add(origin, f"{what} {show_path(path)} has a control character "
                            f"(#x{error.character:04x}) at position {error.position}; "
                            "allowed: printable text")  # fmt: skip
        return None
    try:
        document = loader.get_single_data()
    except yaml.MarkedYAMLError as error:
        # Only the parser's own words and the position: the quoted snippet could hold anything.
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else origin
        context = f" ({error.context})" if error.context else ""
        checker.add(where, f"YAML syntax error: {error.problem}{context}")
        return None
    except yaml.YAMLError as error:
        checker.add(origin, f"YAML error: {type(error).__name__}")
        return None
    finally:
        loader.dispose()
    checker.problems.extend(loader.duplicates)
    return document
