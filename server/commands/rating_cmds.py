"""`sipcore rates import|export|check`, `sipcore balance add-payment|add-charge|show`, `sipcore rate`.

Rate files never depend on the configuration. `balance` and `rate` read it (``--config``, default the
embedded example): customers and accounts are checked against it (an unknown one is refused with a
suggestion), the ledger is the server's own (``rating.ledger``: <state_dir>/ledger.sqlite3, or the
PostgreSQL ledger of several hosts), a balance counts the
configured opening balance, and `rate` prices with the very Rater a real call uses
(config.bridge.rating_setup), on the number normalised as routing does.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rating.errors import RateFileError, RatingError
from rating.ledger import EntryKind, LedgerUnavailable, post
from rating.ledger_store import LedgerAt, ledger_at, ledger_exists, ledger_file, open_ledger
from rating.model import CallToRate, Direction
from rating.money import MoneyError, check_amount, from_micros, parse_decimal, to_micros
from rating.rate_files import read_rate_file, write_rate_file


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
class CliError(Exception):
    """One line for the operator (exit status 1)."""


def _config(path: str | None) -> Any:
    """The configuration (default: the embedded example); its problems printed, then CliError."""
    from config.loader import ConfigError, default_config_path, load_config

    try:
        return load_config(path or default_config_path())
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise CliError(f"{path or default_config_path()}: not a valid configuration") from None


def _ledger(args: argparse.Namespace, cfg: Any, *, must_exist: bool) -> LedgerAt:
    """--db (a SQLite file), else the ledger the server writes: the configuration's ``rating.ledger``
    (<state_dir>/ledger.sqlite3 by default, or a PostgreSQL database)."""
    if args.db:
        return Path(args.db)
    from server.commands.config_lookup import state_file

    at = ledger_at(cfg)
    file = ledger_file(at)
    if file is None:  # a database: no state directory to find
        return at
    return state_file(cfg, file, "ledger", must_exist=must_exist)


def _opening_micros(cfg: Any, customer_id: str) -> int:
    """The configured opening balance (balance.initial): the server counts it in every balance."""
    return to_micros(cfg.customers_by_id[customer_id].balance.initial, "balance.initial")


def _amount(text: str, what: str) -> Decimal:
    return check_amount(parse_decimal(text, what), what)


def _post(args: argparse.Namespace, kind: EntryKind) -> int:
    from server.commands.config_lookup import NotConfigured, check_customer

    try:
        cfg = _config(args.config)
        check_customer(cfg, args.customer)
        customer = cfg.customers_by_id[args.customer]
        amount = _amount(args.amount, "amount")
        if args.threshold is not None:
            threshold = _amount(args.threshold, "threshold")
        else:
            threshold = customer.balance.low_threshold or Decimal(0)
        at = _parse_at(args.at)
        live = _through_server(args, kind, amount)
        if live is not None:
            return live
        opening = _opening_micros(cfg, args.customer)
        with open_ledger(_ledger(args, cfg, must_exist=False)) as ledger:
            entry, event = post(ledger, args.customer, kind, amount, at, args.memo, threshold, opening)
            balance = from_micros(opening + ledger.balance_micros(args.customer))
    except (CliError, NotConfigured, MoneyError, ValueError, LedgerUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"#{entry.id} {kind} {entry.amount} for {args.customer}; balance {balance}")
    if event is not None:
        from rating.alerts import publish_low_balance

        publish_low_balance(event)
        print(f"warning: balance {event.balance} at or below threshold {event.threshold}", file=sys.stderr)
    return 0


def _through_server(args: argparse.Namespace, kind: EntryKind, amount: Decimal) -> int | None:
    """A running server records the movement (once) and applies it to the live balances at once;
    None when no server answers: the caller then writes the ledger, which the server reads at start.
    ``--db`` (an explicit ledger file) always writes offline."""
    import uuid

    from server.commands.admin_cmds import ApiError, NoServer, client_from_config, post_movement

    if args.db:
        return None
    client = client_from_config(args.config)
    if client is None:  # the admin API is disabled: nothing to ask
        return None
    if args.at:
        try:
            client.call("GET", "/status")
        except NoServer:
            return None
        raise CliError(
            "--at is for offline entries: the running server records movements at the current time"
        )
    path = "payments" if kind is EntryKind.PAYMENT else "charges"
    try:
        answer = post_movement(client, args.customer, path, str(amount), uuid.uuid4().hex, args.memo)
    except NoServer:
        print("no server running: recorded in the ledger, counted when the server starts", file=sys.stderr)
        return None
    except ApiError as exc:
        error = exc.body.get("error") if isinstance(exc.body, dict) else exc.body
        print(f"error: the server refused it ({exc.status}: {error})", file=sys.stderr)
        return 1
    print(f"#{answer.get('ledger_id')} {kind} {answer.get('amount')} for {args.customer}; "
          f"balance {answer.get('balance')} (applied live by the running server)")  # fmt: skip
    return 0


def balance_show(args: argparse.Namespace) -> int:
    """Opening balance (configuration) + every ledger movement: the balance the server starts from."""
    from server.commands.config_lookup import NotConfigured, check_customer

    try:
        cfg = _config(args.config)
        check_customer(cfg, args.customer)
        if args.limit is not None and args.limit < 1:
            raise CliError(f"--limit must be at least 1, got {args.limit}")
        at = _ledger(args, cfg, must_exist=False)
        opening = _opening_micros(cfg, args.customer)
        entries, moved = [], 0
        if ledger_exists(at):  # no ledger file yet (the server never ran): the opening balance alone
            with open_ledger(at) as ledger:
                entries = ledger.entries(args.customer, args.limit)
                moved = ledger.balance_micros(args.customer)
    except (CliError, NotConfigured, LedgerUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    balance = from_micros(opening + moved)
    if args.json:
        rows = [
            {"id": e.id, "kind": str(e.kind), "amount": str(e.amount), "at": e.at.isoformat(), "memo": e.memo}
            for e in entries
        ]
        shown = {"customer": args.customer, "opening": str(from_micros(opening)), "balance": str(balance)}
        print(json.dumps({**shown, "entries": rows}, indent=2))
        return 0
    print(f"opening balance {args.customer}: {from_micros(opening)} (balance.initial)")
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


def _non_negative(text: str) -> int:
    """argparse type: a whole number >= 0 (a negative duration or count means nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def dialed_to_e164(cfg: Any, account_id: str, dialed: str) -> str:
    """What the account's phone dials (``0612345678``, ``+33 6 12 34 56 78``) as E.164, by its
    customer's dialing rules, exactly as routing normalises it; CliError when it is not a number."""
    from config.bridge import customer_route
    from routing.numbering import normalise

    customer = cfg.accounts[account_id].customer
    number = normalise(customer_route(cfg, customer).dialing, dialed)
    if number is None:
        raise CliError(
            f"--to {dialed!r} is not a telephone number for {account_id} (country {customer.country}): give "
            f"an E.164 number like +33612345678, or the number as the phone dials it (0612345678)"
        )
    return number


def rate_call(args: argparse.Namespace) -> int:
    """Authorise and rate one hypothetical call, as the server would."""
    from rating.rater import Rater
    from server.commands.config_lookup import NotConfigured, check_account

    try:
        from config.bridge import rating_setup
    except ImportError as exc:  # config/ missing: the rest of the CLI still works
        print(f"error: configuration support unavailable ({exc})", file=sys.stderr)
        return 2
    try:
        cfg = _config(args.config)
        check_account(cfg, args.account)
        longest = cfg.proxy.max_call_duration
        if args.duration is not None and args.duration > longest:
            raise CliError(
                f"--duration {args.duration}: longer than any call can last "
                f"(proxy.max_call_duration {longest} s ends it)"
            )
        to = dialed_to_e164(cfg, args.account, args.to)
        rater = Rater(rating_setup(cfg))
        balance = _amount(args.balance, "balance")
        spent = _amount(args.spent_today, "spent today")
        call = CallToRate(
            Direction(args.direction),
            args.account,
            to,
            _parse_at(args.at),
            on_net=args.on_net,
            answered=args.duration is not None and not args.unanswered,
            duration=args.duration or 0,
        )
        bundle = rater.free_minutes_bundle(args.account)
        left = max(bundle - args.free_used, 0)
        auth = rater.authorise(call, to_micros(balance), to_micros(spent), left)
        rated = rater.rate(call, left) if auth.allowed else None
    except (CliError, NotConfigured, RatingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result: dict[str, Any] = {
        "account": args.account,
        "to": to,
        "at": call.start.isoformat(),
        "duration": call.duration,
        "allowed": auth.allowed,
        "refusal": str(auth.reason) if auth.reason else None,
        "max_seconds": auth.max_seconds,
    }
    if to != args.to:
        result["dialed"] = args.to
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
LEDGER_HELP = "SQLite ledger file (default: the configuration's rating.ledger, as the server)"


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
        p.add_argument("--threshold", help="low-balance threshold to check (default: balance.low_threshold)")
        p.add_argument("--config", help="YAML configuration (default: the embedded example.yaml)")
        p.add_argument("--db", help=LEDGER_HELP)
        p.set_defaults(func=lambda a, k=kind: _post(a, k))
    from server.commands.admin_cmds import add_balance_commands

    add_balance_commands(bsub)  # pay / charge / funds: through the running server only
    show = bsub.add_parser("show", help="balance (opening balance + movements) of a customer")
    show.add_argument("--customer", required=True)
    show.add_argument("--limit", type=int, help="last N movements only")
    show.add_argument("--json", action="store_true")
    show.add_argument("--config", help="YAML configuration (default: the embedded example.yaml)")
    show.add_argument("--db", help=LEDGER_HELP)
    show.set_defaults(func=balance_show)

    rate = subparsers.add_parser("rate", help="price a hypothetical call exactly as a real one")
    rate.add_argument("--account", required=True, help="billed account id, e.g. demo/1001")
    rate.add_argument(
        "--to", required=True, help="E.164 (+33612345678) or as the account's phone dials it (0612345678)"
    )
    rate.add_argument("--duration", type=_non_negative, help="seconds, >= 0 (omit to only authorise)")
    rate.add_argument("--at", help="call start, ISO-8601 (default: now; naive = UTC)")
    rate.add_argument("--direction", default="outbound", choices=["outbound", "forwarded"])
    rate.add_argument("--on-net", action="store_true", help="the destination is one of our DIDs")
    rate.add_argument("--unanswered", action="store_true")
    rate.add_argument(
        "--free-used", type=_non_negative, default=0, help="free minutes already used this cycle (>= 0)"
    )
    rate.add_argument("--balance", default="0", help="balance for a HARD customer's max duration")
    rate.add_argument("--spent-today", default="0", help="spend so far today (daily cap)")
    rate.add_argument("--config", help="YAML configuration (default: the embedded example.yaml)")
    rate.add_argument("--json", action="store_true")
    rate.set_defaults(func=rate_call)
