"""load_config(path) -> Config, or ConfigError listing every problem as FILE:LINE:COL: reason.

Stages, each reporting all it finds: YAML syntax and duplicate keys (config.yaml_marks), then the
schema (pydantic; its error locations mapped back to YAML lines), then cross-references and files
(config.semantics) and the rate files themselves (rating.rate_files). Semantic checks need a
schema-valid file, so a file with schema errors reports those first. Nothing here mutates a live
Config: a reload builds a new one and the server swaps it only when this returns.
"""

from __future__ import annotations

import difflib
import gc
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ValidationError

from config import schema
from config.model import Config, RuntimePaths, local_hosts_of
from config.schema import ConfigFile
from config.semantics import check, resolve
from config.yaml_marks import Document, Problem, YamlError, parse_yaml, read_yaml
from rating.errors import RateFileError
from rating.model import RateTable
from rating.rate_files import read_rate_file


class ConfigError(Exception):
    """The configuration is not usable; ``problems`` holds every located error found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def default_config_path() -> Path:
    """The embedded default (config/example.yaml, shipped as package data)."""
    return Path(str(resources.files("config") / "example.yaml"))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Loading allocates ~10 objects per YAML value and frees none of them: cyclic collections
    triggered meanwhile find nothing and took a third of a 10,000-account load."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def load_config(path: str | Path | None = None) -> Config:
    """Read, validate and index a configuration file (the embedded default when ``path`` is None)."""
    p = Path(path) if path is not None else default_config_path()
    with _gc_paused():
        try:
            doc = read_yaml(p)
        except YamlError as exc:
            raise ConfigError(exc.problems) from None
        return build_config(doc, p.resolve().parent, source=p)


def load_config_text(text: str, base_dir: str | Path, file: str = "<string>") -> Config:
    """Same as load_config for YAML held in memory; relative paths resolve against ``base_dir``."""
    with _gc_paused():
        try:
            doc = parse_yaml(text, file)
        except YamlError as exc:
            raise ConfigError(exc.problems) from None
        return build_config(doc, Path(base_dir), source=None)


def build_config(doc: Document, base_dir: Path, source: Path | None) -> Config:
    """Schema, semantics, rate files and secrets for a parsed document; ConfigError on any problem."""
    if doc.root is None:  # nothing but blanks and comments: a deploy caught half-way, never a config
        raise ConfigError([Problem(doc.file, 1, 1, "the file is empty (no sections at all)")])
    if not isinstance(doc.data, dict):
        raise ConfigError(
            [Problem(doc.file, 1, 1, "the file must be a mapping of sections (server, customers…)")]
        )
    # A file without customers (missing, null or []) serves nobody: a half-written deploy (a reload
    # would drop every phone), never something to run. Reported with the schema's problems.
    nobody: list[Problem] = []
    if not doc.data.get("customers"):
        mark = doc.mark_for(("customers",))
        where = "is empty" if "customers" in doc.data else "is missing"
        reason = f"customers {where}: at least one customer is required"
        nobody.append(Problem(doc.file, mark.line, mark.column, reason))
    try:
        cfg = ConfigFile.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(nobody + schema_problems(doc, exc)) from None
    if nobody:
        raise ConfigError(nobody)

    ix = check(cfg, base_dir)
    problems: list[Problem] = []
    for issue in ix.issues:
        mark = doc.mark_for(issue.loc)
        reason = issue.reason
        if issue.first is not None:
            reason += f" (first at line {doc.mark_for(issue.first).line})"
        problems.append(Problem(doc.file, mark.line, mark.column, reason))
    tables = _rate_tables(cfg, base_dir, doc, problems)
    secret = _nonce_secret(cfg, base_dir, doc, problems)
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.file != doc.file, p.file, p.line, p.column)))
    return Config(
        source=source,
        file=cfg,
        rate_tables=tables,
        nonce_secret=secret,
        paths=_runtime_paths(cfg),
        customers=cfg.customers,
        customers_by_id=MappingProxyType(ix.customers),
        domains=MappingProxyType(ix.domains),
        accounts=MappingProxyType(ix.accounts),
        logins=MappingProxyType(ix.logins),
        dids=MappingProxyType(ix.dids),
        local_hosts=local_hosts_of(cfg),
    )


def schema_problems(doc: Document, exc: ValidationError) -> list[Problem]:
    """Turn pydantic errors into located problems, worded for the operator."""
    out: list[Problem] = []
    seen: set[tuple[int, int, str]] = set()
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        mark = doc.mark_for(loc)
        reason = f"{_dotted(doc, loc)}: {_reason(err)}"
        if (mark.line, mark.column, reason) in seen:
            continue
        seen.add((mark.line, mark.column, reason))
        out.append(Problem(doc.file, mark.line, mark.column, reason))
    return sorted(out, key=lambda p: (p.line, p.column))


def _reason(err: Mapping[str, Any]) -> str:
    kind, msg, loc = err["type"], str(err["msg"]), err["loc"]
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        close = difflib.get_close_matches(key, _known_keys(), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown key {key!r}{hint}"
    if kind == "missing":
        return "this key is required"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "expected a mapping (key: value lines or {key: value})"
    if kind in ("tuple_type", "list_type"):
        return "expected a list ([a, b] or '- ' lines)"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def _dotted(doc: Document, loc: tuple[Any, ...]) -> str:
    """``customers[0].accounts[2].password``, keeping only the parts that exist in the file's shape."""
    parts: list[str] = []
    node: Any = doc.data
    for elem in loc:
        if isinstance(elem, int) and isinstance(node, list):
            parts.append(f"[{elem}]")
            node = node[elem] if 0 <= elem < len(node) else None
        elif isinstance(elem, str) and (isinstance(node, dict) or node is None):
            if isinstance(node, dict) and elem not in node and _is_tag(elem):
                continue  # pydantic's union/validator tag, not a key
            parts.append(("." if parts else "") + elem)
            node = node.get(elem) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


def _is_tag(elem: str) -> bool:
    return any(c in elem for c in "[]()-,") or elem in {"memory", "redis", "sqlite", "postgresql"}


@cache
def _known_keys() -> tuple[str, ...]:
    keys: set[str] = set()
    for obj in vars(schema).values():
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not BaseModel:
            keys.update(obj.model_fields)
    return tuple(sorted(keys))


def _rate_tables(
    cfg: ConfigFile, base_dir: Path, doc: Document, problems: list[Problem]
) -> Mapping[str, RateTable]:
    tables: dict[str, RateTable] = {}
    for name, rel in cfg.rating.rate_tables.items():
        path = resolve(base_dir, rel)
        if not path.is_file():
            continue  # already reported by the semantic checks, at the YAML line
        try:
            tables[name] = read_rate_file(path, name)
        except RateFileError as exc:
            for file, row, reason in exc.problems:
                problems.append(Problem(file, max(row, 1), 1, reason))
    for pname, pkg in cfg.rating.packages.items():
        table = tables.get(pkg.rate_table)
        if table is None:
            continue
        categories = {row.category for row in table.rows}
        for i, cat in enumerate(pkg.included_categories):
            if cat not in categories:
                mark = doc.mark_for(("rating", "packages", pname, "included_categories", i))
                known = ", ".join(sorted(categories)) or "none"
                reason = (
                    f"package {pname!r}: category {cat!r} is not in rate table {pkg.rate_table!r} ({known})"
                )
                problems.append(Problem(doc.file, mark.line, mark.column, reason))
    return MappingProxyType(tables)


def _nonce_secret(cfg: ConfigFile, base_dir: Path, doc: Document, problems: list[Problem]) -> bytes | None:
    reg = cfg.registrar
    if reg.nonce_secret is not None:
        return reg.nonce_secret.encode()
    if reg.nonce_secret_file is None:
        return None
    path = resolve(base_dir, reg.nonce_secret_file)
    try:
        secret = path.read_bytes().strip()
    except OSError:
        return None  # missing file already reported by the semantic checks
    if len(secret) < 16:
        mark = doc.mark_for(("registrar", "nonce_secret_file"))
        problems.append(
            Problem(doc.file, mark.line, mark.column, f"{path}: secret must be at least 16 bytes")
        )
    return secret


def _runtime_paths(cfg: ConfigFile) -> RuntimePaths:
    state = Path(os.path.expanduser(cfg.server.state_dir))

    def under(rel: str) -> Path:
        p = Path(os.path.expanduser(rel))
        return p if p.is_absolute() else state / p

    loc = cfg.registrar.location
    cdr = cfg.cdr
    return RuntimePaths(
        state_dir=state,
        location_state_file=under(loc.state_file) if loc.backend == "memory" and loc.state_file else None,
        cdr_database=under(cdr.path) if cdr.backend == "sqlite" else None,
        cdr_spool_dir=under(cdr.spool_dir),
    )
