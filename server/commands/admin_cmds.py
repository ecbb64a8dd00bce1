"""Commands that ask the running server, through its admin API (server.admin): `sipcore registrations`,
`calls`, `hangup`, `status`, and the live balance commands `pay`, `charge`, `funds`.

Each reads the configuration (``--config``; the embedded example by default) to find the admin address
(``server.admin.listen``) and its bearer token (``server.admin.token_file``), or takes ``--address``.
Tables by default, ``--json`` for the API's own answer. When no server answers, one line says so and
the exit status is 3; nothing is written anywhere (a payment is the server's to record: it writes the
ledger and applies it to the live balances in one step).

Exit status: 0 done, 1 the server refused or failed (its reason is printed), 2 bad usage, 3 no server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

NO_SERVER = 3
TIMEOUT = 10.0


class NoServer(Exception):
    pass


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class AdminClient:
    """A small HTTP/JSON client of the admin API (stdlib only)."""

    def __init__(self, host: str, port: int, token: str | None, timeout: float = TIMEOUT) -> None:
        self.host, self.port, self.token, self.timeout = host, port, token, timeout

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as exc:  # refused, unreachable, timed out
            raise NoServer(str(exc) or type(exc).__name__) from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw, parse_float=Decimal) if raw else None
        except ValueError:
            answer = raw.decode(errors="replace")
        return resp.status, answer

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        status, answer = self.request(method, path, body)
        if status not in ok:
            raise ApiError(status, answer)
        return answer


def client_for(args: argparse.Namespace) -> AdminClient:
    """From ``--address`` / ``--token-file``, else the configuration's server.admin."""
    client = client_from_config(args.config, args.address, args.token_file)
    if client is None:
        raise SystemExit(_fail("the admin API is disabled in this configuration (server.admin: null)", 2))
    return client


def client_from_config(
    config: str | None, address: str | None = None, token_file: str | None = None
) -> AdminClient | None:
    """The client of the server that runs on ``config`` (the embedded example when None); None when
    its admin API is disabled. For other commands too (``sipcore balance add-payment`` can post
    through the running server: see `post_movement`)."""
    from pathlib import Path

    from config.loader import load_config
    from sipcore.transport import split_hostport

    token: str | None = None
    if address:
        host, port = split_hostport(address, 9091)
    else:
        from server.admin_http import read_token

        cfg = load_config(config) if config else load_config(None)
        admin = cfg.server.admin
        if admin is None:
            return None
        host, port = admin.listen.host, admin.listen.port
        token = read_token(cfg)
    if token_file:
        token = Path(token_file).read_text(encoding="utf-8").strip().splitlines()[0].strip()
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return AdminClient(host, port, token)


def post_movement(
    client: AdminClient, customer: str, kind: str, amount: str, operation_id: str, note: str = ""
) -> dict[str, Any]:
    """A payment (``kind`` "payments") or charge ("charges") through the running server, which writes
    the ledger once per ``operation_id`` and applies it to the live balances. Raises NoServer when no
    server answers (nothing was written), ApiError when it refused."""
    body = {"amount": amount, "operation_id": operation_id, "note": note}
    answer: dict[str, Any] = client.call("POST", f"/balances/{quote(customer, safe='')}/{kind}", body)
    return answer


def _fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None, help="the server's YAML (admin address and token)")
    p.add_argument("--address", help="the admin API address (host:port) instead of the configuration's")
    p.add_argument("--token-file", help="the bearer token file instead of the configuration's")
    p.add_argument("--json", action="store_true", help="the API's JSON answer")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("registrations", help="registered phones (from the running server)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--account", help="one account, e.g. demo/1001")
    who.add_argument("--customer", help="one customer's accounts, e.g. demo")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _registrations))

    p = sub.add_parser("calls", help="calls in progress (from the running server)")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _calls))

    p = sub.add_parser("hangup", help="end a call in progress (BYE to both parties, CDR ended by system)")
    p.add_argument("call_id", metavar="CALL-ID")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _hangup))

    p = sub.add_parser("status", help="the running server's status")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _status))


def add_balance_commands(sub: argparse._SubParsersAction, prefix: str = "") -> None:  # type: ignore[type-arg]
    """``pay``, ``charge`` and ``funds`` (live balance), mounted under ``sipcore balance`` by
    server/commands/rating_cmds.py."""
    for name, kind, text in (
        ("pay", "payments", "credit a customer's balance now (the running server records and applies it)"),
        ("charge", "charges", "debit a customer's balance now (the running server records and applies it)"),
    ):
        p = sub.add_parser(prefix + name, help=text)
        p.add_argument("--customer", required=True)
        p.add_argument("--amount", required=True, help="a positive decimal amount, e.g. 20.00")
        p.add_argument(
            "--operation-id", help="your id for this movement (a repeat is applied once); default: new"
        )
        p.add_argument("--note", default="", help="the ledger memo")
        _common(p)
        p.set_defaults(func=lambda a, kind=kind: _run(a, lambda c, a2: _move(c, a2, kind)))
    p = sub.add_parser(prefix + "funds", help="a customer's live balance (from the running server)")
    p.add_argument("--customer", required=True)
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _funds))


def _run(args: argparse.Namespace, command: Any) -> int:
    try:
        client = client_for(args)
    except SystemExit as exc:
        return int(exc.code or 2)
    except Exception as exc:  # an unreadable configuration or token file
        return _fail(f"cannot read the configuration: {exc}", 2)
    try:
        return int(command(client, args) or 0)
    except NoServer as exc:
        return _fail(f"no sipcore server answers on its admin address {client.where} ({exc})", NO_SERVER)
    except ApiError as exc:
        error = exc.body.get("error") if isinstance(exc.body, dict) else exc.body
        if args.json and isinstance(exc.body, dict):
            _print_json(exc.body)
        return _fail(f"{exc.status}: {error}", 1)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """Aligned text columns (header, then one line per row)."""
    cells = [[h for _, h in columns]] + [
        ["" if r.get(k) is None else str(r.get(k)) for k, _ in columns] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _registrations(client: AdminClient, args: argparse.Namespace) -> int:
    query = {k: v for k, v in (("account", args.account), ("customer", args.customer)) if v}
    answer = client.call("GET", "/registrations" + (f"?{urlencode(query)}" if query else ""))
    if args.json:
        _print_json(answer)
        return 0
    cols = [("account", "ACCOUNT"), ("contact", "CONTACT"), ("source", "SOURCE"), ("transport", "TRANSPORT"),
            ("expires_in", "EXPIRES IN"), ("user_agent", "USER AGENT")]  # fmt: skip
    print(table(answer["registrations"], cols))
    print(f"{answer['count']} registration(s)")
    return 0


def _calls(client: AdminClient, args: argparse.Namespace) -> int:
    answer = client.call("GET", "/calls")
    if args.json:
        _print_json(answer)
        return 0
    cols = [("call_id", "CALL-ID"), ("state", "STATE"), ("caller", "CALLER"), ("callee", "CALLEE"),
            ("billed_account", "PAYS"), ("start", "START"), ("duration", "DURATION")]  # fmt: skip
    print(table(answer["calls"], cols))
    print(f"{answer['count']} call(s)")
    if answer.get("workers_missing"):
        print(f"workers that did not answer: {answer['workers_missing']}", file=sys.stderr)
    return 0


def _hangup(client: AdminClient, args: argparse.Namespace) -> int:
    answer = client.call("DELETE", "/calls/" + quote(args.call_id, safe=""))
    if args.json:
        _print_json(answer)
    else:
        print(f"call {args.call_id} hung up")
    return 0


def _status(client: AdminClient, args: argparse.Namespace) -> int:
    answer = client.call("GET", "/status")
    if args.json:
        _print_json(answer)
        return 0
    for key in ("version", "started", "uptime_s", "workers", "registrations", "active_calls", "config"):
        print(f"{key:14} {answer.get(key)}")
    last = answer.get("last_reload")
    print(f"{'last_reload':14} {last['at'] + ' ' + json.dumps(last['result']) if last else '-'}")
    return 0


def _move(client: AdminClient, args: argparse.Namespace, kind: str) -> int:
    operation_id = args.operation_id or f"cli-{uuid.uuid4()}"
    answer = post_movement(client, args.customer, kind, args.amount, operation_id, args.note)
    if args.json:
        _print_json(answer)
        return 0
    again = " (already applied: the first result)" if answer.get("duplicate") else ""
    print(f"{answer['kind']} {answer['amount']} for {answer['customer']}: ledger #{answer['ledger_id']}, "
          f"balance now {answer['balance']}{again}; operation id {operation_id}")  # fmt: skip
    return 0


def _funds(client: AdminClient, args: argparse.Namespace) -> int:
    answer = client.call("GET", f"/balances/{quote(args.customer, safe='')}")
    if args.json:
        _print_json(answer)
        return 0
    print(f"{answer['customer']}: {answer['balance']} {answer['currency']} ({answer['mode']}; ledger "
          f"{answer['ledger_balance']}, counters {answer['counters']})")  # fmt: skip
    for w in answer.get("workers", []):
        print(f"  worker {w['worker']}: {w['balance']}")
    return 0
