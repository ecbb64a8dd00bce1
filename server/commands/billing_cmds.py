"""`sipcore billing run` (fees of a month into the ledger, once each) and `sipcore report statement`.

`billing run` goes through the running server when one answers on the configuration's admin address
(it posts the fees once and every worker applies them to the live balances at once); with no server
it writes the ledger, which the server counts when it starts; ``--db`` always writes that file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rating.billing_cycle import fee_postings, month_bounds, parse_month
from rating.money import to_micros


class CliError(Exception):
    pass


def _setup(args: argparse.Namespace) -> tuple[Any, int, int]:
    from server.commands.config_lookup import NotConfigured, check_customer
    from server.commands.rating_cmds import CliError as ConfigProblem
    from server.commands.rating_cmds import _config

    try:
        cfg = _config(args.config)
        if args.customer:
            check_customer(cfg, args.customer)
        year, month = parse_month(args.month)
    except (ConfigProblem, NotConfigured, ValueError) as exc:
        raise CliError(str(exc)) from None
    return cfg, year, month


def _print_fees(fees: list[dict[str, Any]], dry_run: bool, as_json: bool, how: str) -> None:
    if as_json:
        print(json.dumps({"dry_run": dry_run, "fees": fees, "how": how}, indent=2))
        return
    for f in fees:
        if dry_run:
            state = "would post" if f["posted"] else f"posted before (#{f['ledger_id']})"
        else:
            state = f"posted #{f['ledger_id']}" if f["posted"] else f"already posted (#{f['ledger_id']})"
        print(f"{state:<24} {f['customer']:<12} {f['amount']:>12}  {f['memo']}")
    new = sum(1 for f in fees if f["posted"])
    verb = "would post" if dry_run else "posted"
    print(f"{verb} {new} of {len(fees)} fees ({how})")


def billing_run(args: argparse.Namespace) -> int:
    from rating.ledger import LedgerUnavailable
    from server.admin import posted_json
    from server.billing_run import post_fees
    from server.commands.config_lookup import NotConfigured

    try:
        cfg, year, month = _setup(args)
        live = None if args.db else _through_server(args)
        if live is not None:
            status, answer = live
            _print_fees(answer.get("fees", []), args.dry_run, args.json, "through the running server")
            if status != 200:
                print(f"error: {answer.get('error')}", file=sys.stderr)
                return 1
            return 0
        from config.bridge import initial_balances, rating_setup
        from server.commands.rating_cmds import _ledger

        setup = rating_setup(cfg)
        b = cfg.file.rating.billing
        postings = fee_postings(setup, year, month, args.customer, b.day, b.timezone)
        opening = {c: to_micros(Decimal(v), "balance") for c, v in initial_balances(cfg).items()}
        thresholds = {c.id: to_micros(c.low_balance_threshold) for c in setup.customers.values()}
        path = _ledger(args, cfg, must_exist=False)
        done = post_fees(path, postings, datetime.now(UTC), opening, thresholds, args.dry_run)
    except (CliError, NotConfigured, LedgerUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from rating.alerts import publish_low_balance

    for p in done:
        if p.low is not None:
            publish_low_balance(p.low)
    _print_fees([posted_json(p) for p in done], args.dry_run, args.json, f"ledger {path}")
    return 0


def _through_server(args: argparse.Namespace) -> tuple[int, dict[str, Any]] | None:
    from server.commands.admin_cmds import ApiError, NoServer, client_from_config

    client = client_from_config(args.config)
    if client is None:
        return None
    body = {"month": args.month, "customer": args.customer, "dry_run": args.dry_run}
    try:
        answer = client.call("POST", "/billing/run", body, ok=(200, 503))
    except NoServer:
        print("no server running: posting into the ledger, counted when the server starts", file=sys.stderr)
        return None
    except ApiError as exc:
        error = exc.body.get("error") if isinstance(exc.body, dict) else exc.body
        raise CliError(f"the server refused it ({exc.status}: {error})") from None
    status = 503 if answer.get("workers_missing") else 200
    return status, answer


# ---------------------------------------------------------------------------------------- statement
def statement_main(args: argparse.Namespace) -> int:
    try:
        text = asyncio.run(_statement(args))
    except CliError as exc:
        print(f"sipcore report: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


async def _statement(args: argparse.Namespace) -> str:
    from cdr.statement import COLUMNS, as_html, as_json, build_statement, rows
    from cdr.store import open_store
    from config.bridge import rating_setup
    from rating.ledger import LedgerUnavailable
    from rating.ledger_store import ledger_exists, open_ledger
    from rating.rater import Rater
    from server.commands.config_lookup import NotConfigured
    from server.commands.rating_cmds import _ledger

    if not args.config:
        raise CliError("report statement needs --config FILE (opening balances, fees, time zone)")
    cfg, year, month = _setup(args)
    customer = cfg.customers_by_id[args.customer]
    start, end = month_bounds(year, month, cfg.file.rating.billing.timezone)
    entries = []

    def read() -> list[Any]:
        with open_ledger(at) as ledger:  # blocks: off this coroutine's loop
            return ledger.entries(args.customer)

    try:
        at = _ledger(args, cfg, must_exist=False)
        if ledger_exists(at):
            entries = await asyncio.to_thread(read)
    except (NotConfigured, LedgerUnavailable) as exc:
        raise CliError(str(exc)) from None
    from server.commands.report_cmds import _store_url

    url = _store_url(args, cfg)
    if url.startswith("sqlite:") and not Path(url.removeprefix("sqlite:").removeprefix("//")).exists():
        records, before = [], Decimal(0)
    else:
        store = open_store(url)
        await store.open()
        try:
            records = await store.calls(start, end, customer_id=args.customer)
            usage = await store.usage(
                datetime(1970, 1, 1, tzinfo=UTC), start, by="month", customer_id=args.customer
            )
            before = sum((u.price for u in usage), Decimal(0))
        finally:
            await store.close()
    rater = Rater(rating_setup(cfg))
    s = build_statement(
        args.customer, customer.reference or "", customer.currency, args.month, start, end,
        to_micros(customer.balance.initial, "balance.initial"), entries, before, records,
        lambda r: category_of(rater, r), cfg.file.rating.billing.timezone,
    )  # fmt: skip
    if args.format == "json":
        return as_json(s)
    if args.format == "html":
        return as_html(s)
    from cdr.report_render import render
    from cdr.reports import Report

    title = f"Statement {s.period} of {s.customer_id} ({s.reference}), {s.currency}"
    return render(Report(title, COLUMNS, list(rows(s))), args.format)


def category_of(rater: Any, record: Any) -> str:
    """A call's category on a statement: the rate row's for calls out, else its direction."""
    direction = str(record.direction)
    if direction in ("inbound", "internal") or not record.account_id:
        return direction
    if record.price == 0 and record.billed_seconds == 0 and record.free_minutes == 0:
        return f"{direction}, not billed"
    try:
        route = rater.match(record.account_id, record.normalised)
    except Exception:
        route = None
    return route.category if route is not None else direction


def register(subparsers: Any) -> None:
    from server.commands.rating_cmds import LEDGER_HELP

    billing = subparsers.add_parser("billing", help="billing run: monthly and setup fees into the ledger")
    bsub = billing.add_subparsers(dest="billing_command", required=True, metavar="ACTION")
    run = bsub.add_parser("run", help="post a month's fees once each (docs/rating.md 'Billing run')")
    run.add_argument("--month", required=True, help="YYYY-MM")
    run.add_argument("--customer", help="only this customer id")
    run.add_argument("--dry-run", action="store_true", help="print what would be posted, write nothing")
    run.add_argument("--json", action="store_true")
    run.add_argument("--config", help="YAML configuration (default: the embedded example.yaml)")
    run.add_argument("--db", help=LEDGER_HELP + "; writes it directly, never through a server")
    run.set_defaults(func=billing_run)


def register_statement(kinds: Any) -> None:
    """``sipcore report statement`` (called by report_cmds.register)."""
    from server.commands.rating_cmds import LEDGER_HELP

    st = kinds.add_parser("statement", help="a customer's monthly statement (balance, fees, calls)")
    st.add_argument("--customer", required=True)
    st.add_argument("--month", required=True, help="YYYY-MM (calendar month in rating.billing.timezone)")
    st.add_argument("--format", choices=("table", "csv", "json", "html"), default="table")
    st.add_argument("--config", help="YAML configuration (customers, opening balances, time zone)")
    st.add_argument("--store", help="sqlite:PATH or postgresql://… (default: the configuration's)")
    st.add_argument("--db", help=LEDGER_HELP)
    st.set_defaults(func=statement_main)
