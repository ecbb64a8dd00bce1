"""`sipcore` command line: one argparse tree; each command group lives in server/commands/<name>.py.

A command module exposes ``register(subparsers) -> None``; it adds its sub-commands and sets
``func`` on each parser to a callable ``func(args) -> int`` (the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from importlib.metadata import PackageNotFoundError, version

import server.commands as _commands


def installed_version() -> str:
    """The version pip installed (package metadata), so it never disagrees with pyproject.toml."""
    try:
        return version("sipcore")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipcore",
        description="SIP registrar, proxy and call-rating engine for hosted business telephony.",
    )
    parser.add_argument("--version", action="version", version=f"sipcore {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"server.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
