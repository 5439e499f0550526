"""YAML documents that people write (workflow templates, approval policies): read with the line of
every path, so that an error says ``file:line path: what is wrong``; durations; content hashes.

``on`` stays a word (YAML 1.1 would make it a boolean): only ``true`` / ``false`` are booleans.
A document's version is the SHA-256 of its data as canonical JSON, so comments and layout do not
make a new version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

Path = tuple[str | int, ...]
T = TypeVar("T")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class PathError(ValueError):
    """Something wrong at ``path`` (a tuple of keys and indexes) of a document."""

    def __init__(self, message: str, path: Path = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class DocumentError(ValueError):
    """A document that does not load: where (file, line, path) and what is wrong."""

    def __init__(self, source: str, line: int | None, path: Path, message: str) -> None:
        self.source, self.line, self.path, self.message = source, line, path, message
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where} {dotted(path)}: {message}" if path else f"{where}: {message}")


def dotted(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML with only ``true`` / ``false`` as booleans: a rule's ``on:`` stays the word "on"."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    """YAML as documents are read (``on`` a word, not a boolean)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _lines(node: yaml.Node, path: Path, found: dict[Path, int]) -> None:
    found[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _lines(value, (*path, str(key.value)), found)
            found.setdefault((*path, str(key.value)), key.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), found)


class Document:
    """A YAML text's data, with the line of each path (for errors)."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        try:
            loader = _Loader(text)
            try:
                node = loader.get_single_node()
                self.data: Any = loader.construct_document(node) if node is not None else None
            finally:
                loader.dispose()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise DocumentError(source, mark.line + 1 if mark else None, (), f"not YAML: {exc}") from exc
        self.lines: dict[Path, int] = {}
        if node is not None:
            _lines(node, (), self.lines)

    def parse(self, build: Callable[[Any, str], T]) -> T:
        """``build(data, source)``, with a PathError it raises given its line (a DocumentError)."""
        try:
            return build(self.data, self.source)
        except PathError as exc:
            raise self.error(exc) from exc

    def error(self, exc: PathError) -> DocumentError:
        """``exc`` with the line of its path (or of the nearest enclosing path that has one)."""
        line = next(
            (self.lines[exc.path[:n]] for n in range(len(exc.path), 0, -1) if exc.path[:n] in self.lines),
            None,
        )
        return DocumentError(self.source, line, exc.path, exc.message)


def content_hash(data: Any) -> str:
    """SHA-256 of a document's data as canonical JSON: comments and layout do not make a version."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def mapping(raw: Any, known: tuple[str, ...], at: Path, what: str) -> dict[str, Any]:
    """``raw`` if it is a mapping of only ``known`` keys; else PathError naming what is wrong."""
    if not isinstance(raw, dict):
        raise PathError(f"{what} is a mapping", at)
    for key in raw:
        if key not in known:
            raise PathError(f"unknown key {key!r}; known: {', '.join(known)}", (*at, str(key)))
    return raw


def parse_duration(raw: Any, at: Path) -> dt.timedelta:
    """``30m``, ``4h``, ``2d`` (or seconds as a number) as a timedelta."""
    if isinstance(raw, int | float) and not isinstance(raw, bool) and raw >= 0:
        return dt.timedelta(seconds=raw)
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", str(raw))
    if match is None:
        raise PathError(f"{raw!r} is not a duration (30m, 4h, 2d)", at)
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
