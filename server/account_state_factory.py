"""`build_account_state`: the one place that picks where the account state lives (see
`server.account_state`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routing.forwarding_store import JsonForwardingStore
from server.account_state import AccountStateService, LocalAccountState

if TYPE_CHECKING:
    from server.worker import Worker


def build_account_state(cfg: Any, worker: Worker | None = None) -> AccountStateService:
    """The account state for this process: Redis when the location is shared through Redis (the
    operator shares state across hosts), a replica per worker with several workers, else local."""
    loc = cfg.registrar.location
    store = JsonForwardingStore.in_state_dir(str(cfg.paths.state_dir))
    if loc.backend == "redis":
        from server.account_state_redis import RedisAccountState

        prefix = loc.key_prefix.rstrip(":") + ":acct:"
        return RedisAccountState.from_url(loc.url, prefix=prefix, seed=store.snapshot())
    if worker is None:
        return LocalAccountState(store)
    # Every worker starts from the file; only worker 0 writes it (one writer, no torn file).
    return worker.account_state(store.snapshot(), persist=store.apply if worker.index == 0 else None)
