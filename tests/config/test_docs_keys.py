"""docs/configuration.md documents exactly the schema's keys (issue 17, item 7).

Every field of every section model (config/schema.py) must appear in the documentation of its
section — a table row naming it, a YAML example under that section's heading, or, for a nested
mapping documented in one row (``location``, ``smtp``, ``voicemail`` …), its name in that row's text —
and every key a table names must exist in the schema. Why: the docs said ``batch_size`` defaults to
100 (the schema says 1000) and left out half the registrar's keys; a new field must now come with
its line.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from config import schema as s

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

# heading (## / ### text, or a bold paragraph label) -> the models its tables and examples document;
# ``skip``: fields documented under their own heading.
SECTIONS: dict[str, tuple[tuple[type[BaseModel], ...], frozenset[str]]] = {
    "Top level": (
        (s.ConfigFile,),
        frozenset({"server", "registrar", "proxy", "trunks", "cdr", "rating", "media", "customers"}),
    ),
    "`server`": ((s.ServerSection,), frozenset()),
    "`registrar`": ((s.RegistrarSection,), frozenset()),
    "`proxy`": ((s.ProxySection,), frozenset()),
    "`trunks`": ((s.Trunk,), frozenset()),
    "`cdr`": ((s.SqliteCdr, s.PostgresCdr), frozenset()),
    "`rating`": ((s.RatingSection,), frozenset({"counters", "ledger"})),
    "`rating.counters`": ((s.MemoryCounters, s.RedisCounters), frozenset()),
    "`rating.ledger`": ((s.SqliteLedgerSection, s.PostgresLedgerSection), frozenset()),
    "`media`": ((s.MediaSection,), frozenset()),
    "`customers`": ((s.Customer,), frozenset({"dids", "accounts"})),
    "DID": ((s.Did,), frozenset()),
    "Account": ((s.Account,), frozenset()),
}


@dataclass
class Section:
    rows: dict[str, str] = field(default_factory=dict)  # documented key -> the row's whole text
    examples: set[str] = field(default_factory=set)  # dotted keys of the YAML examples


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's type holds (through Optional, unions, Annotated, tuples and mappings)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if origin in (typing.Union, types.UnionType, tuple, Mapping) or (
        origin is not None and isinstance(origin, type) and issubclass(origin, Mapping)
    ):
        return [m for arg in typing.get_args(annotation) if arg is not Ellipsis for m in _models(arg)]
    return []


def _is_mapping(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_mapping(typing.get_args(annotation)[0])
    return origin is not None and isinstance(origin, type) and issubclass(origin, Mapping)


def schema_paths(models: tuple[type[BaseModel], ...], skip: frozenset[str] = frozenset()) -> set[str]:
    """Dotted paths of every field (nested models included; list and mapping levels are transparent),
    but not inside the ``skip`` fields (documented under their own heading)."""
    out: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for field_name, info in model.model_fields.items():
            name = info.alias or field_name  # the key as written in YAML (Trunk.registration is `register`)
            if not prefix and name in skip:
                out.add(name)
                continue
            path = f"{prefix}{name}"
            out.add(path)
            for sub in _models(info.annotation):
                walk(sub, f"{path}.")

    for model in models:
        walk(model, "")
    return out


def _cell_keys(cell: str) -> list[str]:
    """`a` / `b`, `x.y` / `.z`, `g.a` / `b` / `c`, `a` or `b`, `a`, `b` -> dotted keys."""
    tokens = re.findall(r"`([^`]+)`", cell)
    keys: list[str] = []
    parent = ""
    for i, token in enumerate(tokens):
        if i == 0:
            parent = token.rsplit(".", 1)[0] + "." if "." in token else ""
            keys.append(token)
        elif token.startswith("."):
            keys.append(parent + token[1:])
        else:
            keys.append(token if "." in token else parent + token)
    return keys


def _example_keys(data: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}{key}"
            yield path
            yield from _example_keys(value, f"{path}.")
    elif isinstance(data, list):
        for item in data:
            yield from _example_keys(item, prefix)


def read_doc() -> dict[str, Section]:
    sections: dict[str, Section] = {}
    current: Section | None = None
    lines = DOC.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        heading = re.match(r"^#{2,3} (.+)$", line) or re.match(r"^\*\*([^*]+)\*\*", line)
        if heading:
            name = heading.group(1).strip()
            current = sections.setdefault(name, Section()) if name in SECTIONS else None
        elif line.startswith("```yaml") and current is not None:
            block = []
            i += 1
            while not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            current.examples.update(_example_keys(yaml.safe_load("\n".join(block))))
        elif line.startswith("|") and current is not None:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0] not in ("key", "") and not set(cells[0]) <= set("-: "):
                for key in _cell_keys(cells[0]):
                    current.rows[key] = line
        i += 1
    return sections


def _strip_root(key: str, heading: str) -> str | None:
    """An example written from the top (``rating: {counters: …}``) is read relative to its section
    (None: the section's own name, not a key in it)."""
    for part in heading.strip("`").split("."):
        if key == part:
            return None
        if key.startswith(part + "."):
            key = key[len(part) + 1 :]
    return key


def _normalise_example(models: tuple[type[BaseModel], ...], key: str) -> str:
    """Drop the user-chosen names of mapping levels (package ``pro``, override ``+336``)."""
    out: list[str] = []
    current: list[type[BaseModel]] = list(models)
    parts = key.split(".")
    j = 0
    while j < len(parts):
        part = parts[j]
        fields = {f.alias or n: f for m in current for n, f in m.model_fields.items()}
        if part not in fields:
            return ".".join([*out, *parts[j:]])
        out.append(part)
        info = fields[part]
        current = _models(info.annotation)
        j += 2 if _is_mapping(info.annotation) else 1  # skip the mapping's own key
    return ".".join(out)


def documented(sections: dict[str, Section]) -> dict[str, tuple[set[str], set[str]]]:
    """Per section: (schema paths not documented, documented keys not in the schema)."""
    out = {}
    for heading, (models, skip) in SECTIONS.items():
        sec = sections.get(heading, Section())
        schema = schema_paths(models, skip)
        relative = (_strip_root(k, heading) for k in sec.examples)
        examples = {_normalise_example(models, k) for k in relative if k is not None}
        keys = set(sec.rows) | examples
        missing = set()
        for path in schema:
            if path in skip and heading != "Top level":
                continue  # documented under its own heading
            if path in keys or any(other.startswith(path + ".") for other in schema):
                continue  # documented, or a nested model: its own fields are checked one by one
            parts = path.split(".")
            ancestors = [".".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]
            row = next((sec.rows[a] for a in ancestors if a in sec.rows), None)
            if row is None or not all(
                re.search(rf"\b{re.escape(p)}\b", row) for p in parts[len(ancestors[0].split(".")) :]
            ):
                missing.add(path)
        unknown = {k for k in keys if k not in schema}
        out[heading] = (missing, unknown)
    return out


def test_every_section_is_in_the_doc() -> None:
    assert set(SECTIONS) <= set(read_doc())


def test_every_schema_key_is_documented_and_every_documented_key_exists() -> None:
    problems = {h: p for h, p in documented(read_doc()).items() if p[0] or p[1]}
    assert problems == {}, "\n".join(
        f"{h}: undocumented {sorted(missing)}; not in the schema {sorted(unknown)}"
        for h, (missing, unknown) in problems.items()
    )


def test_every_section_model_is_covered_by_the_check() -> None:
    """A new section model (the schema's root fields) must be added to SECTIONS."""
    assert set(s.ConfigFile.model_fields) == set(SECTIONS["Top level"][1]) | {"default_domain"}


def test_the_check_catches_a_missing_and_an_invented_key() -> None:
    sections = read_doc()
    sections["`cdr`"].rows.pop("batch_size", None)
    sections["`cdr`"].examples.discard("cdr.batch_size")
    sections["`registrar`"].rows["no_such_key"] = "| `no_such_key` | 1 | invented |"
    found = documented(sections)
    assert "batch_size" in found["`cdr`"][0]
    assert "no_such_key" in found["`registrar`"][1]


def test_documented_defaults_of_the_cdr_section() -> None:
    row = read_doc()["`cdr`"].rows["batch_size"]
    assert f"`{s.SqliteCdr.model_fields['batch_size'].default}`" in row
