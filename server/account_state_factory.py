"""`build_account_state`: the one place that picks where the account state lives (see
`server.account_state`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from routing.forwarding_store import JsonForwardingStore
from server.account_state import AccountStateService, HostPeers, LocalAccountState

if TYPE_CHECKING:
    from server.worker import Worker


def build_account_state(cfg: Any, worker: Worker | None = None) -> AccountStateService:
    """The account state for this process: Redis when the location is shared through Redis (the
    operator shares state across hosts), a replica per worker with several workers, else local."""
    loc = cfg.registrar.location
    store = JsonForwardingStore.in_state_dir(str(cfg.paths.state_dir))
    lock = str(Path(cfg.paths.state_dir) / "calls.lock")  # one for the workers of this host
    if loc.backend == "redis":
        from server.account_state_redis import RedisAccountState

        prefix = loc.key_prefix.rstrip(":") + ":acct:"

        def build(host: HostPeers | None) -> RedisAccountState:
            return RedisAccountState.from_url(loc.url, prefix=prefix, sentinels=tuple(loc.sentinels),
                                              sentinel_master=loc.sentinel_master, seed=store.snapshot(),
                                              host=host)  # fmt: skip

        return build(None) if worker is None else worker.shared_account_state(build, lock)
    if worker is None:
        return LocalAccountState(store)
    # Every worker starts from the file; only worker 0 writes it (one writer, no torn file).
    return worker.account_state(
        store.snapshot(), persist=store.apply if worker.index == 0 else None, lock_path=lock
    )
