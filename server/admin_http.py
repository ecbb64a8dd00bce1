"""The admin API's HTTP/JSON edge (``server.admin``: default 127.0.0.1:9091): parses requests, checks
the bearer token, routes to `server.admin.AdminApi`, writes JSON. One request per connection.

Security by default: the configuration refuses a non-loopback address without ``token_file``; when a
token is configured every request must carry ``Authorization: Bearer <token>`` (else 401), compared
in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from rating.ledger import EntryKind
from server.admin import AdminApi
from server.admin_peers import AdminRefused, PeerUnavailable
from sipcore.waiting import within

log = structlog.get_logger("sipcore.admin")

MAX_LINE = 8192
MAX_HEADERS = 64
MAX_BODY = 64 * 1024
READ_TIMEOUT = 5.0

_REASONS = {
    200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large", 500: "Internal Server Error",
    503: "Service Unavailable",
}  # fmt: skip


def token_path(cfg: Any) -> Path | None:
    """The admin token file, relative to the YAML file's directory (None: no token)."""
    from config.semantics import resolve

    admin = cfg.server.admin
    if admin is None or admin.token_file is None:
        return None
    base = Path(cfg.source).parent if cfg.source is not None else Path.cwd()
    return resolve(base, admin.token_file)


def read_token(cfg: Any) -> str | None:
    """The bearer token (the file's first line, stripped); raises OSError/ValueError when unusable."""
    path = token_path(cfg)
    if path is None:
        return None
    text = path.read_text(encoding="utf-8").strip()
    token = text.splitlines()[0].strip() if text else ""
    if len(token) < 16:
        raise ValueError(f"{path}: the admin token must be at least 16 characters")
    return token


def admin_guard(host: str, token: str | None) -> None:
    """Refuse an admin listener off loopback without a token (the configuration refuses it too; this
    also covers ``serve --admin``)."""
    from config.schema import is_loopback_host

    if token is None and not is_loopback_host(host):
        raise ValueError(f"the admin API may listen on {host} only with a token (server.admin.token_file)")


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AdminHttp:
    def __init__(self, api: AdminApi, token: str | None) -> None:
        self.api = api
        self._token = token.encode() if token else None
        self.server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        sock = self.server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, body, extra = 500, {"error": "internal error"}, ""
        method = path = "?"
        try:
            method, target, headers, payload = await within(_read_request(reader), READ_TIMEOUT)
            path = urlsplit(target).path
            if self._token is not None and not self._authorised(headers.get("authorization", "")):
                status, body, extra = (
                    401,
                    {"error": "a valid bearer token is required"},
                    "WWW-Authenticate: Bearer\r\n",
                )
            else:
                status, body = await self._route(method, target, payload)
        except HttpError as exc:
            status, body = exc.status, {"error": str(exc)}
        except AdminRefused as exc:
            status, body = exc.status, {"error": exc.message}
        except PeerUnavailable as exc:
            status, body = 503, {"error": f"a worker did not answer: {exc}"}
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            writer.close()
            return
        except Exception:
            log.exception("admin_request_failed", method=method, path=path)
        if status == 405:
            extra = f"Allow: {body.pop('allow', '')}\r\n"
        data = (json.dumps(body, indent=1, default=_default) + "\n").encode()
        try:
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n{extra}Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
        log.info("admin_request", method=method, path=path, status=status)

    def _authorised(self, value: str) -> bool:
        scheme, _, given = value.partition(" ")
        assert self._token is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    async def _route(self, method: str, target: str, payload: bytes) -> tuple[int, Any]:
        url = urlsplit(target)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        api = self.api

        def allow(*methods: str) -> None:
            if method not in methods:
                raise _NotAllowed(", ".join(methods))

        try:
            if parts == ["registrations"]:
                allow("GET")
                unknown = set(query) - {"account", "customer"}
                if unknown:
                    raise HttpError(400, f"unknown parameters: {', '.join(sorted(unknown))}")
                regs = await api.registrations(query.get("account"), query.get("customer"))
                return 200, {"registrations": regs, "count": len(regs)}
            if parts == ["calls"]:
                allow("GET")
                return 200, await api.calls()
            if len(parts) == 2 and parts[0] == "calls":
                allow("DELETE")
                if not await api.hang_up(parts[1]):
                    raise HttpError(404, f"no call {parts[1]!r} in progress")
                return 200, {"call_id": parts[1], "hung_up": True}
            if len(parts) == 2 and parts[0] == "balances":
                allow("GET")
                return 200, await api.balance(parts[1])
            if len(parts) == 3 and parts[0] == "balances" and parts[2] in ("payments", "charges"):
                allow("POST")
                kind = EntryKind.PAYMENT if parts[2] == "payments" else EntryKind.CHARGE
                return await api.move(parts[1], kind, _json(payload))
            if parts == ["billing", "run"]:
                allow("POST")
                return await api.billing_run(_json(payload))
            if parts == ["reload"]:
                allow("POST")
                return 200, await api.reload()
            if parts == ["status"]:
                allow("GET")
                return 200, await api.status()
        except _NotAllowed as exc:
            return 405, {"error": f"{method} not allowed here", "allow": str(exc)}
        raise HttpError(404, f"no such resource: {url.path}")


class _NotAllowed(Exception):
    pass


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def _json(payload: bytes) -> Any:
    if not payload:
        raise HttpError(400, "a JSON body is required")
    try:
        return json.loads(payload, parse_float=Decimal)  # amounts stay exact
    except ValueError as exc:
        raise HttpError(400, f"the body is not JSON: {exc}") from None


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
    line = await reader.readline()
    if not line:
        raise ConnectionError("closed")
    if len(line) > MAX_LINE:
        raise HttpError(400, "request line too long")
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise HttpError(400, "not an HTTP request")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        if len(h) > MAX_LINE:
            raise HttpError(400, "header line too long")
        name, sep, value = h.decode("latin-1").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    else:
        raise HttpError(400, "too many header lines")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise HttpError(400, "bad Content-Length") from None
    if length < 0 or length > MAX_BODY:
        raise HttpError(413, f"body larger than {MAX_BODY} bytes")
    body = await reader.readexactly(length) if length else b""
    return parts[0].upper(), parts[1], headers, body
