"""`sipcore media`: run the media service alone (``sipcore serve`` normally starts it itself)."""

from __future__ import annotations

import argparse
import asyncio

from server.logs import configure_logging


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("media", help="run the media service (voicemail, conference, message waiting)")
    p.add_argument("--config", "-c", default=None, help="YAML file (default: the embedded example)")
    p.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from server.media_app import run_media

    configure_logging(args.log_format, "info")
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(run_media(args.config))
