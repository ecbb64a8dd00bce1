"""`sipcore serve`: run the server on a configuration file (default: the embedded example)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from dataclasses import replace

from server.logs import configure_logging


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the SIP server")
    p.add_argument("--config", "-c", default=None, help="YAML file (default: the embedded example)")
    p.add_argument("--udp", action="append", help="override UDP listen address(es), e.g. 127.0.0.1:5060")
    p.add_argument("--tcp", action="append", help="override TCP listen address(es), e.g. 127.0.0.1:5070")
    p.add_argument("--metrics", help="override the metrics HTTP address (host:port, 'off' to disable)")
    p.add_argument("--admin", help="override the admin API address (host:port, 'off' to disable)")
    p.add_argument("--workers", type=int, help="override the number of worker processes")
    p.add_argument(
        "--demo-tls",
        action="store_true",
        help="without a server.tls section: TLS on 0.0.0.0:5061, WS on :8080 and WSS on :8443 with a "
        "self-signed pair under state_dir/tls (created when missing); what `make run` does",
    )
    p.add_argument("--log-format", choices=["auto", "json", "console"], help="override the log format")
    p.add_argument(
        "--no-media", action="store_true", help="do not start the media service (run it elsewhere)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from server.app import load_application_config

    try:
        loaded = load_application_config(args.config)
    except Exception as exc:
        print(str(exc))
        return 1
    # The command line's overrides make new settings; the loaded ones are not changed.
    settings = loaded.settings
    sip = replace(
        settings.sip,
        udp=args.udp or settings.sip.udp,
        tcp=args.tcp or settings.sip.tcp,
        metrics_address=(None if args.metrics == "off" else args.metrics)
        if args.metrics
        else settings.sip.metrics_address,
    )
    admin = settings.admin_address
    if args.admin:
        admin = None if args.admin == "off" else args.admin
    if args.demo_tls and loaded.config is not None and loaded.config.server.tls is None:
        from server.tls_context import demo_secure_settings

        try:
            sip = replace(sip, secure=demo_secure_settings(settings.state_dir))
        except Exception as exc:  # a demo convenience: `make run` serves UDP/TCP without it
            print(f"sipcore serve: --demo-tls skipped: {exc}", file=sys.stderr)
    settings = replace(settings, sip=sip, workers=args.workers or settings.workers, admin_address=admin)
    loaded = replace(loaded, settings=settings)
    log_format = args.log_format or settings.log_format
    configure_logging(log_format, settings.log_level)
    from server.media_child import MediaChild, media_wanted
    from sipcore.transport import ListenError

    media = MediaChild(loaded.path, log_format) if media_wanted(loaded.config) and not args.no_media else None
    try:
        if settings.workers > 1:
            from server.workers import run_workers

            return run_workers(loaded, media)
        try:
            import uvloop  # type: ignore[import-not-found]

            uvloop.install()
        except ImportError:
            pass
        return asyncio.run(_single(loaded, media))
    except ListenError as exc:  # a port in use is the operator's to fix: one line, not a traceback
        print(f"sipcore serve: {exc.strerror}", file=sys.stderr)
        return 1


async def _single(loaded: object, media: object) -> int:
    """One process: the application, and the media child beside it when there is one."""
    from server.app import run_application
    from server.media_child import MediaChild

    if not isinstance(media, MediaChild):
        return await run_application(loaded)  # type: ignore[arg-type]
    media.start()
    watcher = asyncio.get_running_loop().create_task(media.watch())
    try:
        return await run_application(loaded, reloaded=lambda: media.signal(signal.SIGHUP))  # type: ignore[arg-type]
    finally:
        media.stopping = True
        watcher.cancel()
        await asyncio.to_thread(media.stop)
