"""`sipcore rates import|export|check`, `sipcore balance add-payment|add-charge|show`, `sipcore rate`.

Rate files never depend on the configuration; `rate` needs it (config.loader.load_config and
config.bridge.rating_setup) and prices a hypothetical call with the very Rater a real call uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rating.errors import RateFileError, RatingError
from rating.ledger import EntryKind, post
from rating.ledger_sqlite import SqliteLedger
from rating.model import CallToRate, Direction
from rating.money import MoneyError, from_micros, parse_decimal
from rating.rate_files import read_rate_file, write_rate_file

DEFAULT_LEDGER = "var/ledger.sqlite3"


def _report(exc: RateFileError) -> int:
    for file, row, reason in exc.problems:
        print(f"{file}:{row}: {reason}", file=sys.stderr)
    n = len(exc.problems)
    print(f"{n} error{'s' if n != 1 else ''}; nothing imported", file=sys.stderr)
    return 1


# ------------------------------------------------------------------------------------------ rates
def rates_import(args: argparse.Namespace) -> int:
    src = Path(args.source)
    name = args.name or src.stem
    out = Path(args.out) if args.out else Path(args.dir) / f"{name}.csv"
    try:
        table = read_rate_file(src, name)
        n = write_rate_file(table, out)
    except RateFileError as exc:
        return _report(exc)
    print(f"imported {n} rows from {src} into {out}")
    return 0


def rates_export(args: argparse.Namespace) -> int:
    try:
        table = read_rate_file(args.source)
        n = write_rate_file(table, args.out)
    except RateFileError as exc:
        return _report(exc)
    print(f"exported {n} rows from {args.source} to {args.out}")
    return 0


def rates_check(args: argparse.Namespace) -> int:
    try:
        table = read_rate_file(args.source)
    except RateFileError as exc:
        return _report(exc)
    print(f"{args.source}: OK: {len(table.rows)} rows")
    return 0


# ---------------------------------------------------------------------------------------- balance
def _post(args: argparse.Namespace, kind: EntryKind) -> int:
    try:
        amount = parse_decimal(args.amount, "amount")
        threshold = parse_decimal(args.threshold, "threshold")
        at = _parse_at(args.at)
        with SqliteLedger(args.db) as ledger:
            entry, event = post(ledger, args.customer, kind, amount, at, args.memo, threshold)
            balance = from_micros(ledger.balance_micros(args.customer))
    except (MoneyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"#{entry.id} {kind} {entry.amount} for {args.customer}; balance {balance}")
    if event is not None:
        from rating.alerts import publish_low_balance

        publish_low_balance(event)
        print(f"warning: balance {event.balance} at or below threshold {event.threshold}", file=sys.stderr)
    return 0


def balance_show(args: argparse.Namespace) -> int:
    with SqliteLedger(args.db) as ledger:
        entries = ledger.entries(args.customer, args.limit)
        balance = from_micros(ledger.balance_micros(args.customer))
    if args.json:
        rows = [
            {"id": e.id, "kind": str(e.kind), "amount": str(e.amount), "at": e.at.isoformat(), "memo": e.memo}
            for e in entries
        ]
        print(json.dumps({"customer": args.customer, "balance": str(balance), "entries": rows}, indent=2))
        return 0
    for e in entries:
        print(f"#{e.id:<6} {e.at.isoformat():<32} {e.kind!s:<8} {e.amount!s:>14}  {e.memo}")
    print(f"balance {args.customer}: {balance}")
    return 0


# ------------------------------------------------------------------------------------------- rate
def _parse_at(text: str | None) -> datetime:
    """ISO-8601 time; naive means UTC; absent means now (the CLI is the edge that reads the clock)."""
    if not text:
        return datetime.now(UTC)
    at = datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _load_rater(config_path: str | None) -> Any:
    from config.bridge import rating_setup
    from config.loader import ConfigError, default_config_path, load_config
    from rating.rater import Rater

    try:
        cfg = load_config(config_path or default_config_path())
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    return Rater(rating_setup(cfg))


def rate_call(args: argparse.Namespace) -> int:
    """Authorise and rate one hypothetical call, as the server would."""
    try:
        rater = _load_rater(args.config)
    except ImportError as exc:  # config/ missing: the rest of the CLI still works
        print(f"error: configuration support unavailable ({exc})", file=sys.stderr)
        return 2
    if rater is None:
        return 1
    try:
        balance = parse_decimal(args.balance, "balance")
        spent = parse_decimal(args.spent_today, "spent today")
        call = CallToRate(
            Direction(args.direction),
            args.account,
            args.to,
            _parse_at(args.at),
            on_net=args.on_net,
            answered=args.duration is not None and not args.unanswered,
            duration=args.duration or 0,
        )
        bundle = rater.free_minutes_bundle(args.account)
        left = max(bundle - args.free_used, 0)
        auth = rater.authorise(call, int(balance.scaleb(6)), int(spent.scaleb(6)), left)
        rated = rater.rate(call, left) if auth.allowed else None
    except (RatingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result: dict[str, Any] = {
        "account": args.account,
        "to": args.to,
        "at": call.start.isoformat(),
        "duration": call.duration,
        "allowed": auth.allowed,
        "refusal": str(auth.reason) if auth.reason else None,
        "max_seconds": auth.max_seconds,
    }
    if rated is not None:
        result.update(
            {k: (str(v) if not isinstance(v, int | type(None)) else v) for k, v in rated._asdict().items()}
        )
        result.update({"cost": str(rated.cost), "price": str(rated.price), "margin": str(rated.margin)})
        for key in ("cost_micros", "price_micros"):
            result.pop(key)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:<18} {'' if value is None else value}")
    return 0 if auth.allowed else 3


# --------------------------------------------------------------------------------------- register
def register(subparsers: Any) -> None:
    rates = subparsers.add_parser("rates", help="import, export or check rate tables (CSV / Excel)")
    rsub = rates.add_subparsers(dest="rates_command", required=True, metavar="ACTION")
    imp = rsub.add_parser("import", help="validate a .csv/.xlsx file, store it as CSV (all or nothing)")
    imp.add_argument("source")
    imp.add_argument("--name", help="table name (default: the file's stem)")
    imp.add_argument("--dir", default="config/rates", help="rates directory (default: config/rates)")
    imp.add_argument("--out", help="output file (default: DIR/NAME.csv)")
    imp.set_defaults(func=rates_import)
    exp = rsub.add_parser("export", help="write a rate table as .csv or .xlsx")
    exp.add_argument("source", help="a stored rate file (.csv or .xlsx)")
    exp.add_argument("--out", required=True, help="destination, .csv or .xlsx")
    exp.set_defaults(func=rates_export)
    chk = rsub.add_parser("check", help="validate a rate file; every bad row as FILE:ROW: reason")
    chk.add_argument("source")
    chk.set_defaults(func=rates_check)

    bal = subparsers.add_parser("balance", help="customer balance ledger (payments, charges, show)")
    bsub = bal.add_subparsers(dest="balance_command", required=True, metavar="ACTION")
    for action, kind, text in (
        ("add-payment", EntryKind.PAYMENT, "credit a payment"),
        ("add-charge", EntryKind.CHARGE, "debit a manual charge"),
    ):
        p = bsub.add_parser(action, help=text)
        p.add_argument("--customer", required=True)
        p.add_argument("--amount", required=True, help="positive decimal, e.g. 20.00")
        p.add_argument("--memo", default="")
        p.add_argument("--at", help="ISO time (default: now, UTC)")
        p.add_argument("--threshold", default="0", help="low-balance threshold to check (default 0)")
        p.add_argument("--db", default=DEFAULT_LEDGER, help=f"ledger file (default {DEFAULT_LEDGER})")
        p.set_defaults(func=lambda a, k=kind: _post(a, k))
    show = bsub.add_parser("show", help="balance and movements of a customer")
    show.add_argument("--customer", required=True)
    show.add_argument("--limit", type=int, help="last N movements only")
    show.add_argument("--json", action="store_true")
    show.add_argument("--db", default=DEFAULT_LEDGER, help=f"ledger file (default {DEFAULT_LEDGER})")
    show.set_defaults(func=balance_show)

    rate = subparsers.add_parser("rate", help="price a hypothetical call exactly as a real one")
    rate.add_argument("--account", required=True, help="billed account id, e.g. demo/1001")
    rate.add_argument("--to", required=True, help="normalised E.164 destination, e.g. +33612345678")
    rate.add_argument("--duration", type=int, help="seconds (omit to only authorise)")
    rate.add_argument("--at", help="call start, ISO-8601 (default: now; naive = UTC)")
    rate.add_argument("--direction", default="outbound", choices=["outbound", "forwarded"])
    rate.add_argument("--on-net", action="store_true", help="the destination is one of our DIDs")
    rate.add_argument("--unanswered", action="store_true")
    rate.add_argument("--free-used", type=int, default=0, help="free minutes already used this cycle")
    rate.add_argument("--balance", default="0", help="balance for a HARD customer's max duration")
    rate.add_argument("--spent-today", default="0", help="spend so far today (daily cap)")
    rate.add_argument("--config", help="YAML configuration (default: the embedded example.yaml)")
    rate.add_argument("--json", action="store_true")
    rate.set_defaults(func=rate_call)
