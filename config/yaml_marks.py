"""Line-tracking YAML reader: plain data plus a path -> (line, column) index.

Why not ``yaml.safe_load``: it forgets where each value came from (so a schema error could not name its
line), lets a duplicate key silently win, and turns ``0.1`` into a float and ``0123`` into an octal int.
Here libyaml composes the node tree (fast, keeps marks) and we build the data ourselves:

- every *plain* scalar stays the exact text the operator wrote; the schema decides its type (pydantic
  parses ``"0.1"`` to ``Decimal("0.1")`` exactly and ``"60"`` to 60). Only ``~``/``null``/empty become
  ``None``. Quoted scalars are always strings.
- a duplicate key in one mapping is an error (reported with both lines), never last-one-wins.
- ``<<`` merge keys are honoured (explicit keys win), so operators can share blocks with anchors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

try:  # libyaml is ~10x faster; fall back to the pure-Python composer when it is not built in.
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - depends on the PyYAML build
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_TAGS = {
    yaml.ScalarNode: "tag:yaml.org,2002:str",
    yaml.SequenceNode: "tag:yaml.org,2002:seq",
    yaml.MappingNode: "tag:yaml.org,2002:map",
}


class _Loader(_BaseLoader):
    """Composes without resolving implicit tags: the schema types every scalar, so the per-scalar
    regex matching PyYAML's resolver does would be wasted (it was ~15% of a 10,000-account load)."""

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        return _TAGS[kind]

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None


def _is_merge(key_node: yaml.Node) -> bool:
    return isinstance(key_node, yaml.ScalarNode) and not key_node.style and key_node.value == "<<"


@dataclass(frozen=True, slots=True)
class Mark:
    """1-based line and column of a node in its file (what editors and `FILE:LINE:COL` expect)."""

    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Problem:
    """One configuration error, located: rendered as ``FILE:LINE:COL: reason``."""

    file: str
    line: int
    column: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Document:
    """Data read from one YAML file, with its node tree kept for locating errors.

    Marks are looked up only when a problem must be reported, so a valid file pays nothing for them.
    """

    file: str
    data: Any
    root: yaml.Node | None

    def mark_for(self, loc: tuple[Any, ...]) -> Mark:
        """Best mark for a pydantic-style location: follow it as deep as the file goes.

        Location elements that are not in the file (pydantic union/validator tags, a missing key) are
        skipped, so a missing field points at its parent and a bad value at its own key.
        """
        node = self.root
        if node is None:
            return Mark(1, 1)
        best = _mark(node)
        for elem in loc:
            if isinstance(node, yaml.MappingNode) and isinstance(elem, str):
                found = _find_key(node, elem)
                if found is None:
                    continue
                best, node = _mark(found[0]), found[1]
            elif (
                isinstance(node, yaml.SequenceNode) and isinstance(elem, int) and 0 <= elem < len(node.value)
            ):
                node = node.value[elem]
                best = _mark(node)
        return best


def _find_key(node: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    merges = []
    for key_node, value_node in node.value:
        if _is_merge(key_node):
            merges.append(value_node)
        elif isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node, value_node
    for merged in merges:
        for src in merged.value if isinstance(merged, yaml.SequenceNode) else [merged]:
            if isinstance(src, yaml.MappingNode):
                found = _find_key(src, key)
                if found is not None:
                    return found
    return None


class YamlError(Exception):
    """The file could not be read as YAML at all; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a composed node tree into plain dicts/lists/strings, collecting duplicate keys."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def build(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            if not node.style and node.value in _NULLS:  # plain style is None or ""
                return None
            return node.value
        if isinstance(node, yaml.SequenceNode):
            build = self.build
            return [build(item) for item in node.value]
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node)
        raise AssertionError(f"unknown node {node!r}")  # pragma: no cover

    def _mapping(self, node: yaml.MappingNode) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merges: list[yaml.Node] = []
        build = self.build
        for key_node, value_node in node.value:
            if _is_merge(key_node):
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._problem(key_node, "a mapping key must be a plain value, not a list or mapping")
                continue
            key = key_node.value
            if key in out:
                first = _find_key(node, key)
                line = _mark(first[0]).line if first else 0
                self._problem(key_node, f"duplicate key {key!r} (first defined at line {line})")
                continue
            out[key] = build(value_node)
        for merged in merges:
            for src in merged.value if isinstance(merged, yaml.SequenceNode) else [merged]:
                if not isinstance(src, yaml.MappingNode):
                    self._problem(src, "'<<' must merge a mapping or a list of mappings")
                    continue
                for key, value in self._mapping(src).items():
                    out.setdefault(key, value)  # explicit keys win over merged ones
        return out

    def _problem(self, node: yaml.Node, reason: str) -> None:
        mark = _mark(node)
        self.problems.append(Problem(self.file, mark.line, mark.column, reason))


# Contexts that name something opened and never closed ('[', '{', a quote): libyaml notices at the
# line after it (problem_mark), but the mistake is where it was opened (context_mark).
_UNCLOSED = ("while parsing a flow", "while scanning a quoted scalar")
_OPENER = {
    "while parsing a flow sequence": "the '['",
    "while parsing a flow mapping": "the '{'",
    "while scanning a quoted scalar": "the quote",
}


def syntax_problem(exc: yaml.MarkedYAMLError, file: str) -> Problem:
    """The syntax error located where the operator must look: the opening of an unclosed bracket
    or quote, else the line libyaml stopped at."""
    problem, context = exc.problem or "invalid YAML", exc.context or ""
    opened = exc.context_mark if context.startswith(_UNCLOSED) else None
    if opened is not None:
        seen = exc.problem_mark
        noticed = f"; noticed at line {seen.line + 1}" if seen is not None else ""
        what = _OPENER.get(context, "the bracket or quote")
        reason = f"{what} opened here is never closed ({problem}{noticed})"
        return Problem(file, opened.line + 1, opened.column + 1, f"YAML syntax error: {reason}")
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    reason = " ".join(p for p in (context, problem) if p)
    return Problem(file, line, col, f"YAML syntax error: {reason}")


def parse_yaml(text: str, file: str = "<string>") -> Document:
    """Read one YAML document from ``text``; raise YamlError (every located problem) if it is not valid."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise YamlError([syntax_problem(exc, file)]) from None
    except yaml.YAMLError as exc:
        raise YamlError([Problem(file, 1, 1, f"YAML error: {exc}")]) from None
    if root is None:
        return Document(file, {}, None)
    builder = _Builder(file)
    data = builder.build(root)
    if builder.problems:
        raise YamlError(builder.problems)
    return Document(file, data, root)


def read_yaml(path: Path) -> Document:
    """Read a YAML file (UTF-8); an unreadable file is a located problem too."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlError([Problem(str(path), 1, 1, f"cannot read file: {exc}")]) from None
    return parse_yaml(text, str(path))
