"""The memory store replicated across workers: the writer's changes reach every replica; a closed TCP
connection is fixed by each AOR's writer, so replicas converge whatever order messages cross in; only
worker 0 writes the state file, every worker loads it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from registrar.location import ContactChange, Flow, RegisterChanges
from registrar.location.replicated import (
    FLOW_CLOSED,
    SNAPSHOT,
    ReplicatedLocationStore,
    ReplicationError,
    decode,
    encode_flow_closed,
    encode_snapshot,
)

T0 = 1_700_000_000.0
UDP = Flow("udp", "198.51.100.7", 5060, "203.0.113.5:5060")
TCP = Flow("tcp", "198.51.100.8", 40000, "203.0.113.5:5070", "node/w1-tcp-3")


def reg(call_id: str, cseq: int, uri: str, expires: int = 3600, flow: Flow = UDP, **kw) -> RegisterChanges:  # type: ignore[no-untyped-def]
    return RegisterChanges(call_id, cseq, flow, (ContactChange(uri, expires, **kw),), user_agent="ua")


class Mesh:
    """N replicas whose published messages wait in per-destination queues until delivered, so a test
    chooses the order in which they cross."""

    def __init__(self, count: int, state: Path | None = None) -> None:
        self.queues: dict[int, list[bytes]] = {i: [] for i in range(count)}
        self.stores = [ReplicatedLocationStore(state, i, self._publisher(i)) for i in range(count)]

    def _publisher(self, sender: int):  # type: ignore[no-untyped-def]
        def publish(payload: bytes) -> None:
            for dest, queue in self.queues.items():
                if dest != sender:
                    queue.append(payload)

        return publish

    def deliver(self, dest: int | None = None) -> None:
        for i in [dest] if dest is not None else list(self.queues):
            queue, self.queues[i] = self.queues[i], []
            for payload in queue:
                self.stores[i].receive(payload)

    def deliver_all(self) -> None:
        while any(self.queues.values()):
            self.deliver()

    def views(self, aor: str, now: float = T0) -> list[list[tuple[str, bool]]]:
        return [[(b.contact, b.flow_alive) for b in s.lookup(aor, now)] for s in self.stores]


def test_messages_round_trip() -> None:
    mesh = Mesh(1)
    mesh.stores[0].register(
        "sip:a@x", reg("c", 1, "sip:a@10.0.0.1", flow=TCP, reg_id=1, instance="<urn:x>"), T0
    )
    bindings = mesh.stores[0].bindings_of("sip:a@x")
    assert decode(encode_snapshot(3, "sip:a@x", bindings)) == (SNAPSHOT, 3, "sip:a@x", bindings)
    assert decode(encode_flow_closed("node/w0-tcp-1")) == (FLOW_CLOSED, "node/w0-tcp-1")


@pytest.mark.parametrize("payload", [b"", b"\xc1", b"\x92\x07\x01", b"\x94\x01\x00\x01\x90", b"\x92\x02\x05"])
def test_unreadable_messages_raise_and_are_dropped_by_receive(payload: bytes) -> None:
    with pytest.raises(ReplicationError):
        decode(payload)
    mesh = Mesh(2)
    mesh.stores[1].receive(payload)  # logged, no exception
    assert mesh.stores[1].aor_count() == 0


def test_the_writers_changes_reach_every_replica() -> None:
    mesh = Mesh(3)
    writer = mesh.stores[1]
    writer.register("sip:a@x", reg("c", 1, "sip:a@10.0.0.1"), T0)
    writer.register("sip:a@x", reg("c", 2, "sip:a@10.0.0.2", q=900), T0 + 1)
    mesh.deliver_all()
    assert mesh.views("sip:a@x", T0 + 2) == [[("sip:a@10.0.0.1", True), ("sip:a@10.0.0.2", True)]] * 3
    assert all(s.contact_count() == 2 for s in mesh.stores)
    writer.register("sip:a@x", reg("c", 3, "sip:a@10.0.0.1", expires=0), T0 + 3)  # unregister one
    writer.register("sip:a@x", reg("c", 4, "sip:a@10.0.0.2", expires=0), T0 + 3)
    mesh.deliver_all()
    assert all(s.aor_count() == 0 and s.contact_count() == 0 for s in mesh.stores)


def test_nothing_is_published_when_nothing_changed() -> None:
    mesh = Mesh(2)
    mesh.stores[0].register("sip:a@x", reg("c", 1, "sip:a@10.0.0.1", expires=0), T0)  # removes nothing
    assert mesh.queues[1] == []


def test_replicas_expire_on_their_own() -> None:
    mesh = Mesh(2)
    mesh.stores[0].register("sip:a@x", reg("c", 1, "sip:a@10.0.0.1", expires=60), T0)
    mesh.deliver_all()
    assert [len(s.sweep(T0 + 61)) for s in mesh.stores] == [1, 1]
    assert all(s.aor_count() == 0 for s in mesh.stores)


def test_a_closed_connection_is_fixed_by_the_writer_and_published() -> None:
    mesh = Mesh(2)
    writer, holder = mesh.stores  # worker 0 wrote the AOR; worker 1 holds the TCP connection
    writer.register("sip:a@x", reg("c", 1, "sip:a@10.0.0.1;transport=tcp", flow=TCP), T0)
    mesh.deliver_all()
    holder.close_flow(TCP.connection_id or "")
    assert mesh.views("sip:a@x")[1] == [("sip:a@10.0.0.1;transport=tcp", True)]  # not its AOR to fix
    mesh.deliver_all()
    assert mesh.views("sip:a@x") == [[("sip:a@10.0.0.1;transport=tcp", False)]] * 2


def test_an_outbound_binding_goes_with_its_connection_everywhere() -> None:
    mesh = Mesh(3)
    mesh.stores[2].register(
        "sip:a@x", reg("c", 1, "sip:a@10.0.0.1", flow=TCP, reg_id=1, instance="<urn:a>"), T0
    )
    mesh.deliver_all()
    mesh.stores[0].close_flow(TCP.connection_id or "")
    mesh.deliver_all()
    assert all(s.aor_count() == 0 for s in mesh.stores)


def test_a_register_applied_before_the_close_is_not_resurrected_by_late_delivery() -> None:
    """The writer applied a REGISTER on the connection, then learnt it closed; a replica receives the
    close first and the writer's two snapshots afterwards: it ends where the writer is."""
    mesh = Mesh(3)
    writer, holder, _late = mesh.stores
    writer.register("sip:a@x", reg("c", 1, "sip:a@10.0.0.1;transport=tcp", flow=TCP), T0)
    holder.close_flow(TCP.connection_id or "")  # queued for the writer and the late replica
    late_queue = mesh.queues[2]
    mesh.queues[2] = [p for p in late_queue if decode(p)[0] == FLOW_CLOSED] + [
        p for p in late_queue if decode(p)[0] == SNAPSHOT
    ]
    mesh.deliver(0)  # the writer processes the close: publishes the dead-flow snapshot
    mesh.deliver_all()
    assert mesh.views("sip:a@x") == [[("sip:a@10.0.0.1;transport=tcp", False)]] * 3
    assert all(TCP.connection_id not in s._flows for s in mesh.stores)  # no index entry left behind


def test_only_worker_0_writes_the_state_file_and_every_worker_loads_it(tmp_path: Path) -> None:
    state = tmp_path / "location.sqlite"
    mesh = Mesh(2, state)
    for s in mesh.stores:
        s.load(T0)
    mesh.stores[1].register("sip:b@x", reg("c", 1, "sip:b@10.0.0.2"), T0)  # written by worker 1
    mesh.stores[0].register("sip:a@x", reg("d", 1, "sip:a@10.0.0.1"), T0)
    mesh.deliver_all()
    assert mesh.stores[1].dirty_count == 0  # worker 1 closed its handle after loading
    assert mesh.stores[0].flush_now() == 2  # worker 0 persists both, its own and the installed one
    with sqlite3.connect(state) as db:
        assert sorted(r[0] for r in db.execute("SELECT aor FROM location_bindings")) == ["sip:a@x", "sip:b@x"]
    again = Mesh(2, state)
    assert [s.load(T0 + 1) for s in again.stores] == [2, 2]
    assert again.views("sip:b@x", T0 + 1) == [[("sip:b@10.0.0.2", True)]] * 2
