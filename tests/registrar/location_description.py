"""A seeded walk through the location store, described as JSON: run by
tests/registrar/test_location_compiled.py once on the mypyc build and once on the Python sources
(the reference), which must describe it alike.

Three replicas (`ReplicatedLocationStore`, memory backend) take REGISTERs for a few AORs from
several phones (plain, RFC 5627 instance, RFC 5626 instance + reg-id; UDP and TCP flows): refreshes,
new Call-IDs, stale CSeqs, removals, ``Contact: *``, contact limits under both overflow policies,
two Contacts at once, Contacts that match only after canonicalisation. Between them: replication
messages delivered in a shuffled order, TCP connections closed, expiry sweeps, unreadable
replication messages, and worker 0's state file read back by a fresh store. Each step records what
the store answered (bindings, events, or the error's type and text), every replication payload
published, and each replica's view.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from registrar.location import (
    Binding,
    ContactChange,
    Flow,
    LocationError,
    MemoryLocationStore,
    OverflowPolicy,
    RegisterChanges,
)
from registrar.location.codec import decode as decode_binding
from registrar.location.codec import encode as encode_binding
from registrar.location.contact_key import contact_key
from registrar.location.replicated import ReplicatedLocationStore
from sipcore.speedups import LOADED

T0 = 1_700_000_000.0
AORS = [f"sip:{u}@example.com" for u in ("1001", "1002", "1003", "1004")]
CONTACTS = [
    "<sip:1001@192.0.2.10:5060;transport=UDP>",
    "<SIP:1001@192.0.2.10:5060;Transport=udp>",  # the one above after canonicalisation
    "<sip:1001@192.0.2.11:5062;ob>",
    "<sip:1001@[2001:db8::1]:5060>",
    "sip:1001@198.51.100.9",
]
FLOWS = [
    Flow("udp", "192.0.2.10", 5060, "127.0.0.1:5060"),
    Flow("udp", "198.51.100.7", 40123, "127.0.0.1:5060"),
    Flow("tcp", "192.0.2.11", 50000, "127.0.0.1:5070", "node/w0-tcp-1"),
    Flow("tcp", "192.0.2.12", 50001, "127.0.0.1:5070", "node/w1-tcp-2"),
]


def binding(b: Binding) -> list[Any]:
    f = b.flow
    return [
        b.aor, b.contact, b.expires_at, b.q, b.call_id, b.cseq,
        [f.transport, f.source_ip, f.source_port, f.local_address, f.connection_id],
        b.registered_at, b.instance, b.reg_id, b.user_agent, list(b.path), b.received, b.flow_alive,
        b.key, b.is_outbound, b.expires_in(T0),
    ]  # fmt: skip


def event(e: Any) -> list[Any]:
    fields = (getattr(e, name) for name in e.__slots__)
    return [type(e).__name__, *(binding(v) if isinstance(v, Binding) else v for v in fields)]


class Walk:
    def __init__(self, seed: int, state: Path) -> None:
        self.rng = random.Random(seed)
        self.queues: dict[int, list[bytes]] = {i: [] for i in range(3)}
        self.stores = [
            ReplicatedLocationStore(state if i == 0 else None, i, self._publisher(i)) for i in range(3)
        ]
        self.phones: dict[tuple[str, int], list[int]] = {}  # (aor, phone) -> [call-id serial, cseq]
        self.out: list[Any] = []

    def _publisher(self, sender: int):  # type: ignore[no-untyped-def]
        def publish(payload: bytes) -> None:
            self.out.append(["published", sender, base64.b64encode(payload).decode()])
            for dest, queue in self.queues.items():
                if dest != sender:
                    queue.append(payload)

        return publish

    def deliver(self, dest: int) -> None:
        queue, self.queues[dest] = self.queues[dest], []
        for payload in queue:
            self.stores[dest].receive(payload)

    def changes(self, aor: str) -> RegisterChanges:
        rng = self.rng
        phone = rng.randrange(4)
        serial = self.phones.setdefault((aor, phone), [0, 1])
        if rng.random() < 0.1:
            serial[0] += 1  # the phone restarted: a new Call-ID
        if rng.random() < 0.1:
            serial[1] = max(1, serial[1] - rng.randrange(3))  # a stale or repeated CSeq
        else:
            serial[1] += 1
        call_id = f"{aor}-{phone}-{serial[0]}"
        flow = FLOWS[rng.randrange(len(FLOWS))]
        if rng.random() < 0.05:
            return RegisterChanges(call_id, serial[1], flow, wildcard=True, user_agent="ua")
        contacts = []
        for _ in range(1 if rng.random() < 0.85 else 2):
            kind = rng.randrange(3)
            contacts.append(ContactChange(
                CONTACTS[rng.randrange(len(CONTACTS))],
                0 if rng.random() < 0.1 else rng.choice((1, 60, 3600)),
                rng.choice((1000, 500, 0)),
                f"<urn:uuid:{phone}>" if kind else None,
                rng.randrange(1, 3) if kind == 2 else None,
            ))  # fmt: skip
        path = ("<sip:edge.example.com;lr>",) if rng.random() < 0.2 else ()
        received = f"sip:{flow.source_ip}:{flow.source_port}" if rng.random() < 0.5 else None
        return RegisterChanges(
            call_id, serial[1], flow, tuple(contacts), False, f"ua-{phone}", path, received
        )

    def step(self, now: float) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.7:
            writer = rng.randrange(3)
            aor = AORS[rng.randrange(len(AORS))]
            limit = rng.choice((None, 0, 1, 2, 3))
            policy = rng.choice((OverflowPolicy.REJECT, OverflowPolicy.DROP_OLDEST))
            changes = self.changes(aor)
            try:
                result = self.stores[writer].register(aor, changes, now, limit, policy)
            except LocationError as exc:
                self.out.append(["refused", writer, aor, type(exc).__name__, str(exc)])
            else:
                self.out.append(["applied", writer, aor, [binding(b) for b in result.bindings],
                                 [event(e) for e in result.events]])  # fmt: skip
        elif roll < 0.85:
            self.deliver(rng.randrange(3))
        elif roll < 0.9:
            worker = rng.randrange(3)
            cid = rng.choice([f.connection_id for f in FLOWS if f.connection_id])
            self.out.append(["closed", worker, [event(e) for e in self.stores[worker].close_flow(cid)]])
        elif roll < 0.95:
            worker = rng.randrange(3)
            self.out.append(["swept", worker, [binding(b) for b in self.stores[worker].sweep(now)],
                             self.stores[worker].next_expiry()])  # fmt: skip
        else:
            self.stores[rng.randrange(3)].receive(rng.randbytes(rng.randrange(12)))  # logged, dropped

    def views(self, now: float) -> list[Any]:
        return [
            [s.aor_count(), s.contact_count(), {a: [binding(b) for b in s.lookup(a, now)] for a in AORS}]
            for s in self.stores
        ]


async def walk(seed: int) -> list[Any]:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "location.sqlite3"
        w = Walk(seed, state)
        now = T0
        for i in range(400):
            now += w.rng.choice((0.0, 0.5, 7.0, 61.0))
            w.step(now)
            if i % 50 == 49:
                w.out.append(["views", w.views(now)])
        for dest in w.queues:  # everything delivered: the replicas agree
            w.deliver(dest)
        w.out.append(["views", w.views(now)])
        for store in w.stores:
            await store.close()  # worker 0's flushes its state file
        reread = MemoryLocationStore(state)
        restored = reread.load(now)
        w.out.append(["reloaded", restored, {a: [binding(b) for b in reread.lookup(a, now)] for a in AORS}])
        await reread.close()
        return w.out


def main() -> None:
    logging.disable(logging.CRITICAL)  # the unreadable replication messages are logged as dropped
    described: dict[str, Any] = {"loaded": [name for name in LOADED if name.startswith("compiled: ")]}
    for seed in range(6):
        described[f"walk {seed}"] = asyncio.run(walk(seed))
    described["keys"] = [
        contact_key(c, inst, reg) for c in CONTACTS for inst in (None, "<urn:x>") for reg in (None, 1)
    ]
    sample = Binding("sip:1001@example.com", CONTACTS[0], T0 + 0.25, 500, "c", 7, FLOWS[2], T0, "<urn:x>", 1,
                     "ua", ("<sip:p;lr>",), "sip:192.0.2.11:50000", False)  # fmt: skip
    encoded = encode_binding(sample)
    described["codec"] = [base64.b64encode(encoded).decode(), binding(decode_binding(sample.aor, encoded))]
    json.dump(described, sys.stdout)


if __name__ == "__main__":
    main()
