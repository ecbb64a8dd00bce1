"""What the offline commands (balance, rate, report) look up in the configuration: customers and
accounts (an unknown one is refused with a suggestion, never answered with an empty result) and the
runtime files under ``server.state_dir`` (the ledger, the SQLite CDRs), found where the server keeps
them rather than relative to wherever the command happens to run.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any


class NotConfigured(Exception):
    """A name or a file the configuration does not know; the text is the one line to print."""


def account_suggestions(cfg: Any, text: str) -> list[str]:
    """Account ids a mistyped account or customer probably meant: an extension, a SIP username or
    the part after ``/`` matching ``text`` (``1001`` -> ``demo/1001``), else close spellings."""
    tail = text.rsplit("/", 1)[-1]
    exact = [
        aid
        for aid, entry in cfg.accounts.items()
        if tail in (entry.account.extension, entry.account.username)
    ]
    return sorted(exact) or difflib.get_close_matches(text, list(cfg.accounts), n=3, cutoff=0.75)


def check_account(cfg: Any, account_id: str) -> None:
    """Refuse an account id the configuration does not have, saying which ones were meant."""
    if account_id in cfg.accounts:
        return
    hint = account_suggestions(cfg, account_id)
    did_you_mean = f"; did you mean {' or '.join(hint)}?" if hint else ""
    raise NotConfigured(
        f"unknown account {account_id!r} (account ids are <customer id>/<extension>){did_you_mean}"
    )


def check_customer(cfg: Any, customer_id: str) -> None:
    """Refuse a customer id the configuration does not have; an account's id or extension given
    instead names the account and its customer."""
    if customer_id in cfg.customers_by_id:
        return
    accounts = account_suggestions(cfg, customer_id)
    owners = sorted({cfg.accounts[a].customer.id for a in accounts})
    if accounts and owners:
        hint = f"; {customer_id!r} looks like account {' or '.join(accounts)}: use --customer {owners[0]}"
    else:
        close = difflib.get_close_matches(customer_id, list(cfg.customers_by_id), n=3, cutoff=0.6)
        known = close or sorted(cfg.customers_by_id)[:10]
        hint = f"; did you mean {' or '.join(close)}?" if close else f" (configured: {', '.join(known)})"
    raise NotConfigured(f"unknown customer {customer_id!r}{hint}")


def state_file(cfg: Any, path: Path, what: str, *, must_exist: bool) -> Path:
    """``path`` (under the configuration's state_dir) when it can be the server's own file.

    Why refuse: a relative ``server.state_dir`` is relative to the server's working directory, so a
    command run elsewhere would read an empty store or, worse, record a payment where the server
    never looks. A missing file is refused when ``must_exist``; a missing relative state directory
    always is (an absolute one is created on demand, as the server does).
    """
    state = Path(cfg.paths.state_dir)
    relative = not state.is_absolute()
    where = ""
    if relative:
        source = f" in {cfg.source}" if cfg.source is not None else ""
        where = (
            f" (server.state_dir {str(state)!r}{source} is relative to the server's working directory: "
            f"run this command there, or make state_dir absolute)"
        )
    if relative and not state.is_dir():
        raise NotConfigured(f"no state directory {state.resolve()}{where}")
    if must_exist and not path.exists():
        raise NotConfigured(f"no {what} at {path.resolve()}{where}")
    return path
