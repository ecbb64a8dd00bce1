"""The floors of docs/architecture.md hold for calls/: it imports only the SIP core, routing and the
rating types (and itself), and nothing imports it but the process wiring in server/ (and tests)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {"calls", "sipcore", "routing", "rating"}
PACKAGES = ("sipcore", "registrar", "routing", "rating", "cdr", "config", "calls", "media", "server")


def _imports(path: Path) -> set[str]:
    """Top-level packages a module imports, lazy imports included (stdlib and third party too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
    return out


def test_calls_imports_only_the_floors_below() -> None:
    for path in sorted((ROOT / "calls").glob("*.py")):
        ours = _imports(path) & set(PACKAGES)
        assert ours <= ALLOWED, f"{path.name} imports {sorted(ours - ALLOWED)}"


def test_only_server_imports_calls() -> None:
    for package in PACKAGES:
        if package in ("calls", "server"):
            continue
        for path in sorted((ROOT / package).rglob("*.py")):
            assert "calls" not in _imports(path), f"{path.relative_to(ROOT)} imports calls"


def test_media_stands_on_its_own() -> None:
    """The media parts import none of the other packages yet (the service adapter will sit in server/)."""
    for path in sorted((ROOT / "media").glob("*.py")):
        ours = _imports(path) & set(PACKAGES)
        assert ours <= {"media"}, f"{path.name} imports {sorted(ours - {'media'})}"
