"""Location service: where each address of record (AOR) can be reached, RFC 3261 §10.

One contract (`LocationStore`), two backends: `MemoryLocationStore` (default, in-process, persisted
write-behind to a SQLite state file) and `RedisLocationStore` (shared by several processes/hosts).
Both apply the same pure rules (`plan_register`, `plan_flow_closed`). See docs/location.md.
"""

from sipcore.speedups import compiled_first

compiled_first(__name__, __path__)  # before the imports below: the mypyc build of the store (setup.py)

from registrar.location.binding import Binding, Flow, ordered
from registrar.location.changes import ContactChange, OverflowPolicy, RegisterChanges
from registrar.location.contact_key import canonical_uri, contact_key
from registrar.location.errors import (
    ContentionError,
    InvalidChangesError,
    LocationError,
    StaleCSeqError,
    TooManyContactsError,
)
from registrar.location.events import (
    BindingAdded,
    BindingExpired,
    BindingFlowLost,
    BindingRefreshed,
    BindingRemoved,
    LocationEvent,
)
from registrar.location.memory import MemoryLocationStore
from registrar.location.redis_store import RedisLocationStore
from registrar.location.rules import ApplyResult, plan_flow_closed, plan_register
from registrar.location.store import LocationStore

__all__ = [
    "ApplyResult",
    "Binding",
    "BindingAdded",
    "BindingExpired",
    "BindingFlowLost",
    "BindingRefreshed",
    "BindingRemoved",
    "ContactChange",
    "ContentionError",
    "Flow",
    "InvalidChangesError",
    "LocationError",
    "LocationEvent",
    "LocationStore",
    "MemoryLocationStore",
    "OverflowPolicy",
    "RedisLocationStore",
    "RegisterChanges",
    "StaleCSeqError",
    "TooManyContactsError",
    "canonical_uri",
    "contact_key",
    "ordered",
    "plan_flow_closed",
    "plan_register",
]
