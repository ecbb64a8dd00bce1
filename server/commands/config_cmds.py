"""`sipcore check-config [FILE]`: validate a configuration as a reload would, and say what is wrong.

Prints every problem as ``FILE:LINE:COL: reason`` (the format editors and CI annotate) and exits 1, or
prints a one-line summary and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from config.loader import ConfigError, default_config_path, load_config


def check_config(args: argparse.Namespace) -> int:
    path = args.file or default_config_path()
    try:
        cfg = load_config(path)
        if cfg.server.tls is not None and not cfg.server.tls.self_signed:  # they load as `serve` loads them
            from server.tls_context import secure_settings

            secure_settings(cfg.server, str(path))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        n = len(exc.problems)
        print(f"{path}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return 1
    print(f"{path}: OK: {cfg.summary()}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="validate a configuration file (every error as FILE:LINE:COL: reason)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("file", nargs="?", help="YAML file (default: the embedded example.yaml)")
    parser.set_defaults(func=check_config)
