"""`sipcore report calls|account|financial|dids|accounts`: billing reports from the CDR store.

CDR figures come from the store alone (``--store sqlite:PATH`` or ``postgresql://…``; default
``sqlite:var/cdr.sqlite3``, or the store named in ``--config``). ``--config`` adds what only the
configuration knows: fees (financial) and the lists of accounts and DIDs with their packages.
Periods: ``--from`` and ``--to`` are UTC; a date given to ``--to`` includes that whole day.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from cdr.periods import months_between, next_month
from cdr.record import Direction
from cdr.report_render import FORMATS, render
from cdr.reports import (
    AccountInfo,
    DidInfo,
    MonthlyFee,
    Report,
    accounts_report,
    calls_report,
    dids_report,
    financial_report,
)
from cdr.store import CdrStore, StoreUrlError, open_store

DEFAULT_STORE = "sqlite:var/cdr.sqlite3"


class ReportError(Exception):
    """A usage problem, printed as one line with exit status 2."""


def parse_when(text: str, *, end: bool) -> datetime:
    """ISO date or datetime, in UTC unless an offset is given; an end date means 'through that day'."""
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            dt = datetime(d.year, d.month, d.day, tzinfo=UTC)
            return dt + timedelta(days=1) if end else dt
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date or datetime: {text!r}") from exc
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _load_config(path: str) -> Any:
    try:
        from config.loader import load_config
    except ImportError as exc:  # the config package is another team's; say so plainly
        raise ReportError(f"--config needs config.loader.load_config, not importable: {exc}") from exc
    return load_config(path)


def _store_url(args: argparse.Namespace, cfg: Any) -> str:
    if args.store:
        return args.store
    if cfg is not None:
        section = cfg.file.cdr
        if getattr(section, "backend", "") == "postgresql":
            return section.dsn
        if cfg.paths.cdr_database is not None:
            return f"sqlite:{cfg.paths.cdr_database}"
    return DEFAULT_STORE


def _package(cust: Any, acc: Any) -> str:
    return acc.package or cust.default_package or ""


def _destination(to: Any) -> str:
    kind, target = getattr(to, "kind", None), getattr(to, "target", None)
    if kind is None:
        return str(to)
    return f"{kind}:{target}" if target else str(kind)


def account_infos(cfg: Any, customer: str | None) -> list[AccountInfo]:
    return [
        AccountInfo(
            customer_id=e.customer.id,
            customer_ref=e.customer.reference,
            internal=e.customer.internal,
            account_id=e.id,
            username=e.account.username,
            display_name=e.account.display_name or "",
            package=_package(e.customer, e.account),
            outgoing_number=e.account.outgoing_number or "",
        )
        for e in cfg.accounts.values()
        if customer is None or e.customer.id == customer
    ]


def did_infos(cfg: Any, customer: str | None) -> list[DidInfo]:
    return [
        DidInfo(
            customer_id=e.customer.id,
            customer_ref=e.customer.reference,
            internal=e.customer.internal,
            number=e.did.number,
            destination=_destination(e.did.to),
            package=e.customer.default_package or "",
            setup_fee=e.did.setup_fee,
            monthly_fee=e.did.monthly_fee,
            incoming_rate=e.did.incoming_rate,
        )
        for e in cfg.dids.values()
        if customer is None or e.customer.id == customer
    ]


def monthly_fees(cfg: Any, start: datetime, end: datetime, customer: str | None) -> list[MonthlyFee]:
    """Fees due per month, by the rating team's rules (rating.fees.fees_due on the config's setup)."""
    try:
        from config.bridge import rating_setup
        from rating.fees import fees_due
    except ImportError as exc:
        raise ReportError(f"fees need config.bridge and rating.fees, not importable: {exc}") from exc
    setup = rating_setup(cfg)
    out = []
    for y, m in months_between(start, end):
        for fee in fees_due(setup, y, m):
            cust = cfg.customers_by_id[fee.customer_id]
            if customer is not None and cust.id != customer:
                continue
            out.append(
                MonthlyFee(fee.period, cust.id, cust.reference, cust.internal, cust.currency, fee.amount)
            )
    return out


async def build_report(args: argparse.Namespace, store: CdrStore, cfg: Any) -> Report:
    start, end, customer = args.start, args.end, args.customer
    kind = args.report
    if kind == "calls":
        return calls_report(await store.calls(start, end, customer_id=customer))
    if kind == "account":
        recs = await store.calls(start, end, customer_id=customer, account_id=args.account)
        return calls_report(recs, title=f"Calls of account {args.account}")
    if kind == "financial":
        usage = await store.usage(start, end, by="month", customer_id=customer)
        fees = monthly_fees(cfg, start, end, customer) if cfg is not None else []
        report = financial_report(usage, fees)
        if cfg is None:
            note = "fees: none (no --config given; revenue is call revenue only)"
            return Report(report.title, report.columns, report.rows, report.totals, (note,))
        return report
    if cfg is None:
        raise ReportError(f"report {kind} lists the configured {kind}: give --config FILE")
    if kind == "accounts":
        usage = await store.usage(start, end, by="account", customer_id=customer)
        return accounts_report(account_infos(cfg, customer), usage)
    usage = await store.usage(start, end, by="number", customer_id=customer, direction=Direction.INBOUND)
    return dids_report(did_infos(cfg, customer), usage)


def _check_configured(args: argparse.Namespace, cfg: Any) -> None:
    """--customer and --account must name configured ones: a typo is refused, not an empty report."""
    from server.commands.config_lookup import NotConfigured, check_account, check_customer

    try:
        if args.customer:
            check_customer(cfg, args.customer)
        if getattr(args, "account", None):
            check_account(cfg, args.account)
    except NotConfigured as exc:
        raise ReportError(str(exc)) from None


async def _check_in_store(args: argparse.Namespace, store: CdrStore) -> None:
    """Without --config, a customer or account is known by its calls: one the store has never seen is
    refused (a typo, or an account id without its customer), so an empty report means 'no calls'."""
    ever = await store.usage(datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC), by="account")
    customers = {u.customer_id for u in ever}
    accounts = {u.account_id for u in ever if u.account_id}
    customer, account = args.customer, getattr(args, "account", None)
    unseen = "has no call in the store at all; give --config FILE to report on a configured one without calls"
    if customer and customer not in customers:
        raise ReportError(f"customer {customer!r} {unseen}")
    if account and account not in accounts:
        tail = account.rsplit("/", 1)[-1]
        hint = sorted(a for a in accounts if a.rsplit("/", 1)[-1] == tail)
        meant = (
            f" (account ids are <customer id>/<extension>: did you mean {' or '.join(hint)}?)" if hint else ""
        )
        raise ReportError(f"account {account!r} {unseen}{meant}")


async def _run(args: argparse.Namespace) -> str:
    cfg = _load_config(args.config) if args.config else None
    if cfg is not None:
        _check_configured(args, cfg)
    url = _store_url(args, cfg)
    store = open_store(url)
    if url.startswith("sqlite:"):
        path = Path(url.removeprefix("sqlite:").removeprefix("//"))
        if cfg is not None and not args.store:  # the server's own store: say where it was looked for
            from server.commands.config_lookup import NotConfigured, state_file

            try:
                state_file(cfg, path, "CDR store", must_exist=True)
            except NotConfigured as exc:
                raise ReportError(str(exc)) from None
        if not path.exists():
            raise ReportError(f"no CDR store at {path}")
    await store.open()
    try:
        report = await build_report(args, store, cfg)
        if cfg is None and not report.rows and (args.customer or getattr(args, "account", None)):
            await _check_in_store(args, store)
    finally:
        await store.close()
    return render(report, args.format)


def run_report(args: argparse.Namespace) -> int:
    try:
        text = asyncio.run(_run(args))
    except (ReportError, StoreUrlError) as exc:
        print(f"sipcore report: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # database errors and the like: one readable line, non-zero status
        print(f"sipcore report: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def _this_month() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    y, m = next_month(now.year, now.month)
    return datetime(now.year, now.month, 1, tzinfo=UTC), datetime(y, m, 1, tzinfo=UTC)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--from", dest="start", type=lambda s: parse_when(s, end=False),
                        help="period start, UTC (default: first day of this month)")  # fmt: skip
    common.add_argument("--to", dest="end", type=lambda s: parse_when(s, end=True),
                        help="period end, UTC; a date includes that day (default: month end)")  # fmt: skip
    common.add_argument("--customer", help="only this customer id")
    common.add_argument("--format", choices=FORMATS, default="table")
    common.add_argument("--store", help=f"sqlite:PATH or postgresql://… (default {DEFAULT_STORE})")
    common.add_argument("--config", help="configuration YAML (fees, accounts, DIDs, default store)")

    report = subparsers.add_parser("report", help="billing reports from the CDR store")
    kinds = report.add_subparsers(dest="report", required=True, metavar="REPORT")
    kinds.add_parser("calls", parents=[common], help="every call with cost, price and margin")
    acct = kinds.add_parser("account", parents=[common], help="one account's calls")
    acct.add_argument("--account", required=True, help="account id, <customer id>/<extension>")
    kinds.add_parser("financial", parents=[common], help="month by month revenue, fees, cost, margin")
    kinds.add_parser("dids", parents=[common], help="configured DIDs, packages, fees, inbound usage")
    kinds.add_parser("accounts", parents=[common], help="configured accounts, packages and usage")
    for p in kinds.choices.values():
        p.set_defaults(func=_with_defaults)
    from server.commands.billing_cmds import register_statement

    register_statement(kinds)  # its own options (--month, html): not the period reports' ones


def _with_defaults(args: argparse.Namespace) -> int:
    first, nxt = _this_month()
    args.start = args.start or first
    args.end = args.end or nxt
    if args.end <= args.start:
        print("sipcore report: --to must be after --from", file=sys.stderr)
        return 2
    return run_report(args)
