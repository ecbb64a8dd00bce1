"""The admin API's operations (issue 17): registrations, calls, hang-up, balances, payments and charges,
reload and status, for the whole server.

Two layers. `LocalAdmin` answers for this process: the calls whose Call-ID it owns, a hang-up of one
of them, a ledger entry to apply to the balances it authorises from, its reload. `AdminApi` answers
for the server: in a single process it is the local answer; with ``server.workers > 1`` it runs in
worker 0 (which serves the admin port, as it serves /metrics) and asks the other workers over the
worker channel (`server.admin_peers`) for what only they hold, merging their answers. The HTTP edge
(`server.admin_http`) only parses requests and writes JSON.

Registrations need no question to the others: with the memory location backend every worker holds a
full replica, with Redis they share it. A payment or charge is written to the ledger once, by worker
0 (a unique key on the client's operation id: a repeat finds the first row), then applied to the live
balances: with Redis counters folded into Redis once (by ledger id) and re-read by every worker at
once (other hosts within their refresh interval); with memory counters added once by each worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import structlog

from rating.ledger import EntryKind, LedgerEntry, LedgerUnavailable, signed_micros
from rating.money import from_micros
from server.admin_peers import AdminPeers, AdminRefused, PeerUnavailable
from sipcore.ownership import owner_of_call_id

if TYPE_CHECKING:
    from server.app import Application

log = structlog.get_logger("sipcore.admin")

MAX_OPERATION_ID = 200
RELOAD_TIMEOUT = 60.0  # a reload reads the YAML and rate files: longer than other questions
MAX_NOTE = 500


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds") if epoch is not None else None


def _money(micros: int) -> str:
    """Exact: cents when the amount has no finer part ("20.00"), else every decimal it has."""
    amount = from_micros(micros)
    cents = amount.quantize(Decimal("0.01"))
    return str(cents if cents == amount else amount.normalize())


def sipcore_version() -> str:
    try:
        return version("sipcore")
    except PackageNotFoundError:
        return "unknown"


def jsonable(value: Any) -> Any:
    """A reload result (bool today, a structured result later) as JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def entry_json(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "customer": entry.customer_id,
        "kind": str(entry.kind),
        "amount_micros": entry.amount_micros,
        "at": entry.at.isoformat(),
        "memo": entry.memo,
        "operation_id": entry.operation_id,
    }


def entry_of(data: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        str(data["customer"]), EntryKind(data["kind"]), int(data["amount_micros"]),
        datetime.fromisoformat(data["at"]), str(data["memo"]), int(data["id"]), data.get("operation_id"),
    )  # fmt: skip


def posted_json(posted: Any) -> dict[str, Any]:
    p = posted.posting
    return {
        "customer": p.customer_id,
        "kind": p.kind,
        "item": p.item,
        "subject": p.subject,
        "period": p.period,
        "amount": str(p.amount),
        "memo": p.memo,
        "operation_id": p.operation_id,
        "ledger_id": posted.entry.id if posted.entry is not None else None,
        "posted": posted.created,
    }


class LocalAdmin:
    """This process's part: its calls, hang-ups, live balances, reload (the handler of peers' questions)."""

    def __init__(self, app: Application) -> None:
        self.app = app
        self.index = app.worker.index if app.worker is not None else 0
        self.last_reload: dict[str, Any] | None = None

    # -- calls --
    def calls(self) -> list[dict[str, Any]]:
        proxy = self.app.proxy
        if proxy is None:
            return []
        now = proxy.sip.now()
        shift = time.time() - now  # the controller's clock -> wall clock
        out = []
        for call in list(proxy.controller.calls.values()):
            answered = call.answered_at
            state = (
                "answered"
                if answered is not None
                else ("ringing" if call.ringing_at is not None else "setup")
            )
            out.append({
                "call_id": call.call_id,
                "worker": self.index,
                "state": state,
                "direction": call.direction,
                "caller": call.caller_number,
                "caller_account": call.account_id,
                "callee": call.normalised or call.dialed,
                "dialed": call.dialed,
                "callee_account": call.callee_account_id,
                "customer": call.customer_id,
                "billed_account": call.billed_account_id or (call.account_id if call.direction != "inbound" else None),
                "start": _iso(call.started + shift),
                "answer": _iso(answered + shift) if answered is not None else None,
                "duration": int(now - answered) if answered is not None else 0,
                "setup_seconds": int(now - call.started),
            })  # fmt: skip
        return out

    def hang_up(self, call_id: str) -> bool:
        proxy = self.app.proxy
        return bool(proxy is not None and proxy.hang_up(call_id))

    # -- balances --
    async def apply(self, entry: LedgerEntry, origin: bool) -> int:
        return int(await self.app.billing.apply_entry(entry, origin))

    async def balance(self, customer_id: str) -> int:
        return int(await self.app.billing.balance(customer_id))

    # -- billing run --
    async def billing_run(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Post (once) and apply the fees of a month here; what each fee did."""
        from rating.billing_cycle import parse_month

        year, month = parse_month(str(args["month"]))
        done = await self.app.billing.run_fees(year, month, args.get("customer"), bool(args.get("dry_run")))
        return [posted_json(p) for p in done]

    # -- reload --
    async def reload(self) -> Any:
        result = await self.app.reload()
        self.last_reload = {"at": _iso(time.time()), "result": jsonable(result)}
        return jsonable(result)

    async def handle(self, op: str, args: dict[str, Any]) -> Any:
        """Another worker's question (server.admin_peers)."""
        if op == "calls":
            return self.calls()
        if op == "hangup":
            return self.hang_up(str(args["call_id"]))
        if op == "apply":
            return await self.apply(entry_of(args["entry"]), origin=False)
        if op == "balance":
            return await self.balance(str(args["customer"]))
        if op == "reload":
            return await self.reload()
        if op == "billing_run":
            return await self.billing_run(args)
        if op == "metrics":  # worker 0's /metrics gathers every worker's (server.http)
            from prometheus_client import REGISTRY, generate_latest

            return generate_latest(REGISTRY).decode()
        raise AdminRefused(400, f"unknown operation {op!r}")


class AdminApi:
    """The server's answers (worker 0's with several workers, gathering the others')."""

    def __init__(self, app: Application, local: LocalAdmin, peers: AdminPeers | None) -> None:
        self.app = app
        self.local = local
        self.peers = peers
        self.workers = app.worker.count if app.worker is not None else 1

    @property
    def cfg(self) -> Any:
        return self.app.loaded.config

    # -- registrations --
    async def registrations(
        self, account: str | None = None, customer: str | None = None
    ) -> list[dict[str, Any]]:
        cfg, proxy, registrar = self.cfg, self.app.proxy, self.app.registrar
        if account is not None and account not in cfg.accounts:
            raise AdminRefused(404, f"no account {account!r}")
        if customer is not None and customer not in cfg.customers_by_id:
            raise AdminRefused(404, f"no customer {customer!r}")
        aor_of = proxy.controller.settings.aor_of
        wanted = [
            (account_id, entry.customer.id, aor_of[account_id])
            for account_id, entry in cfg.accounts.items()
            if account_id in aor_of
            and (account is None or account_id == account)
            and (customer is None or entry.customer.id == customer)
        ]
        now = time.time()
        store = registrar.store
        out: list[dict[str, Any]] = []
        for start in range(0, len(wanted), 200):  # a shared store: 200 lookups in flight at most
            chunk = wanted[start : start + 200]
            found = await asyncio.gather(*(store.get(aor, now) for _, _, aor in chunk))
            for (account_id, customer_id, aor), bindings in zip(chunk, found, strict=True):
                for b in bindings:
                    f = b.flow
                    out.append({
                        "account": account_id,
                        "customer": customer_id,
                        "aor": aor,
                        "contact": b.contact,
                        "source": f"[{f.source_ip}]:{f.source_port}" if ":" in f.source_ip
                        else f"{f.source_ip}:{f.source_port}",
                        "transport": f.transport,
                        "expires": _iso(b.expires_at),
                        "expires_in": b.expires_in(now),
                        "registered": _iso(b.registered_at),
                        "user_agent": b.user_agent,
                    })  # fmt: skip
        return out

    # -- calls --
    async def calls(self) -> dict[str, Any]:
        calls = self.local.calls()
        missing: list[int] = []
        if self.peers is not None:
            for worker, answer in sorted((await self.peers.ask_others("calls")).items()):
                if isinstance(answer, BaseException):
                    missing.append(worker)
                else:
                    calls.extend(answer)
        calls.sort(key=lambda c: c["start"] or "")
        return {"calls": calls, "count": len(calls), "workers_missing": missing}

    async def hang_up(self, call_id: str) -> bool:
        """True when the call was found (and is being ended); raises PeerUnavailable."""
        owner = owner_of_call_id(call_id, self.workers)  # a dialog's one owner
        if self.peers is None or owner == self.local.index:
            return self.local.hang_up(call_id)
        return bool(await self.peers.ask(owner, "hangup", {"call_id": call_id}))

    # -- balances --
    def _customer(self, customer_id: str) -> Any:
        customer = self.cfg.customers_by_id.get(customer_id)
        if customer is None:
            raise AdminRefused(404, f"no customer {customer_id!r}")
        return customer

    async def balance(self, customer_id: str) -> dict[str, Any]:
        customer = self._customer(customer_id)
        billing = self.app.billing
        try:
            ledger: str | None = _money(await billing.ledger_balance(customer_id))
        except LedgerUnavailable:  # a PostgreSQL ledger down: the live balance still answers
            ledger = None
        out: dict[str, Any] = {
            "customer": customer_id,
            "currency": customer.currency,
            "mode": str(customer.balance.mode),
            "balance": _money(await self.local.balance(customer_id)),
            "ledger_balance": ledger,
            "counters": "redis" if billing.shared is not None else "memory",
        }
        if self.peers is not None and billing.shared is None:  # memory: each worker spends its own
            per = [{"worker": self.local.index, "balance": out["balance"]}]
            for worker, answer in sorted(
                (await self.peers.ask_others("balance", {"customer": customer_id})).items()
            ):
                per.append(
                    {
                        "worker": worker,
                        "balance": None if isinstance(answer, BaseException) else _money(answer),
                    }
                )
            out["workers"] = per
        return out

    async def move(self, customer_id: str, kind: EntryKind, body: Any) -> tuple[int, dict[str, Any]]:
        """A payment or a charge: (HTTP status, answer). 201 when written now, 200 for a repeat of the
        same operation id (the first result), 409 when that id was used for another movement, 503 when
        it is recorded but could not be applied everywhere (repeat the request: it is applied once)."""
        self._customer(customer_id)
        amount, operation_id, note = _movement(body)
        billing = self.app.billing
        try:
            entry, created = await billing.record(customer_id, kind, amount, operation_id, note)
        except ValueError as exc:
            raise AdminRefused(400, str(exc)) from None
        except LedgerUnavailable as exc:  # a PostgreSQL ledger down: nothing written, repeat later
            raise AdminRefused(503, str(exc)) from None
        if (entry.customer_id, entry.kind, entry.amount_micros) != (
            customer_id,
            kind,
            signed_micros(kind, amount),
        ):
            raise AdminRefused(
                409, f"operation_id {operation_id!r} was used for another movement (ledger entry {entry.id})"
            )
        answer: dict[str, Any] = {
            "operation_id": entry.operation_id,
            "customer": entry.customer_id,
            "kind": str(entry.kind),
            "amount": _money(abs(entry.amount_micros)),
            "note": entry.memo,
            "ledger_id": entry.id,
            "at": entry.at.isoformat(timespec="seconds"),
            "duplicate": not created,
        }
        log.info("balance_movement", customer=customer_id, kind=str(kind), amount=answer["amount"],
                 operation_id=operation_id, ledger_id=entry.id, duplicate=not created)  # fmt: skip
        try:
            balance = await self.local.apply(entry, origin=True)
        except Exception as exc:
            log.warning("balance_movement_not_applied", ledger_id=entry.id, error=repr(exc))
            answer["error"] = (
                "recorded in the ledger but not applied to the live balances (shared counters "
                "unreachable): repeat the request with the same operation_id"
            )
            return 503, answer
        answer["balance"] = _money(balance)
        if self.peers is not None:
            missing = [
                w
                for w, result in (await self.peers.ask_others("apply", {"entry": entry_json(entry)})).items()
                if isinstance(result, BaseException)
            ]
            if missing:
                answer["workers_missing"] = sorted(missing)
                answer["error"] = (
                    "recorded in the ledger but not applied by every worker: repeat the request with the "
                    "same operation_id"
                )
                return 503, answer
        return (201 if created else 200), answer

    # -- billing run --
    async def billing_run(self, body: Any) -> tuple[int, dict[str, Any]]:
        """The fees of a month posted once (by this worker) and applied by every worker at once (each
        finds the rows by their unique keys). 503 when a worker did not answer: repeat (nothing twice)."""
        from rating.billing_cycle import parse_month

        if not isinstance(body, dict) or not isinstance(body.get("month"), str):
            raise AdminRefused(400, 'give {"month": "YYYY-MM"} (optional "customer", "dry_run")')
        customer = body.get("customer")
        if customer is not None:
            self._customer(str(customer))
        try:
            parse_month(body["month"])
        except ValueError as exc:
            raise AdminRefused(400, str(exc)) from None
        args = {"month": body["month"], "customer": customer, "dry_run": bool(body.get("dry_run", False))}
        fees = await self.local.billing_run(args)
        answer: dict[str, Any] = {"month": body["month"], "dry_run": args["dry_run"], "fees": fees}
        if self.peers is not None and not args["dry_run"]:
            missing = [
                w
                for w, result in (await self.peers.ask_others("billing_run", args)).items()
                if isinstance(result, BaseException)
            ]
            if missing:
                answer["workers_missing"] = sorted(missing)
                answer["error"] = (
                    "posted but not applied by every worker: repeat the run (nothing is posted twice)"
                )
                return 503, answer
        return 200, answer

    # -- reload and status --
    async def reload(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"result": await self.local.reload()}
        if self.peers is not None:
            others = await self.peers.ask_others("reload", timeout=RELOAD_TIMEOUT)
            answer["workers"] = {
                str(w): ({"error": str(r)} if isinstance(r, BaseException) else r)
                for w, r in sorted(others.items())
            }
        return answer

    async def status(self) -> dict[str, Any]:
        app = self.app
        store = app.registrar.store
        calls = await self.calls()
        return {
            "version": sipcore_version(),
            "started": _iso(app.started_at),
            "uptime_s": round(time.time() - app.started_at, 1),
            "workers": self.workers,
            "registrations": await store.count_contacts(time.time()),
            "registered_aors": await store.count_aors(time.time()),
            "active_calls": calls["count"],
            "config": app.loaded.path,
            "last_reload": self.local.last_reload,
            "workers_missing": calls["workers_missing"],
        }


def _movement(body: Any) -> tuple[Decimal, str, str]:
    """(amount, operation id, note) from a request body; AdminRefused(400) when malformed."""
    if not isinstance(body, dict):
        raise AdminRefused(400, 'the body must be a JSON object: {"amount": "20.00", "operation_id": "..."}')
    unknown = set(body) - {"amount", "operation_id", "note"}
    if unknown:
        raise AdminRefused(400, f"unknown fields: {', '.join(sorted(unknown))}")
    raw = body.get("amount")
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise AdminRefused(400, 'amount must be a decimal string such as "20.00"')
    try:
        amount = Decimal(str(raw).strip())
    except InvalidOperation:
        raise AdminRefused(400, f"amount {raw!r} is not a decimal number") from None
    if not amount.is_finite() or amount <= 0:
        raise AdminRefused(400, f"amount must be positive, got {raw!r}")
    operation_id = body.get("operation_id")
    if not isinstance(operation_id, str) or not operation_id.strip() or len(operation_id) > MAX_OPERATION_ID:
        raise AdminRefused(
            400, f"operation_id must be a non-empty string of at most {MAX_OPERATION_ID} characters"
        )
    note = body.get("note", "")
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise AdminRefused(400, f"note must be a string of at most {MAX_NOTE} characters")
    return amount, operation_id, note


__all__ = ["AdminApi", "AdminRefused", "LocalAdmin", "PeerUnavailable"]
