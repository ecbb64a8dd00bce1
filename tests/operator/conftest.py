"""Helpers of the operator tests: the example configuration with a few changes, and the CLI run
in-process with its output captured."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from config.loader import default_config_path
from server.cli import main
from tests.conftest import free_port

EXAMPLE = default_config_path()
Run = Callable[..., tuple[int, str, str]]


def write_example(directory: Path, state_dir: str, *changes: tuple[str, str]) -> Path:
    """example.yaml in ``directory`` with its rate table by absolute path and the given state_dir."""
    text = EXAMPLE.read_text(encoding="utf-8")
    for old, new in (
        ("carrier: rates/example.csv", f"carrier: {EXAMPLE.parent / 'rates' / 'example.csv'}"),
        # offline commands: no running server may answer on this config's admin address
        ("state_dir: var", f"state_dir: {state_dir}\n  admin: {{listen: 127.0.0.1:{free_port()}}}"),
        ("internal: true", "internal: false"),
        *changes,
    ):
        assert old in text, old
        text = text.replace(old, new, 1)  # the first occurrence: one problem, one line
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sipcore.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def go(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return go
