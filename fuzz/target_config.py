"""The configuration loader (config/loader.py) on any text: a Config or ConfigError, nothing else
(an operator's typo must get a message naming the line, never a traceback)."""

from __future__ import annotations

from collections.abc import Iterable

from config.loader import ConfigError, load_config_text

from .seeds import ROOT

BASE = ROOT / "config"


def seeds() -> Iterable[bytes]:
    yield (BASE / "example.yaml").read_bytes()
    yield b"server: {workers: 1}\n"


def check(data: bytes) -> None:
    try:
        load_config_text(data.decode("utf-8", "replace"), BASE)
    except ConfigError:
        pass
