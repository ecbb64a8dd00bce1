"""Bindings outlive the process: `sipcore serve` is stopped with SIGTERM and started again on the same
state (memory backend + state file, or Redis); a query REGISTER (no Contact) still lists the phones.
Two processes sharing one Redis see each other's bindings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.registrar_sip.client import Phone, SipClient, contact_expires
from tests.registrar_sip.configs import PASSWORDS, write_config
from tests.registrar_sip.conftest import REDIS_URL, serve_process

pytestmark = pytest.mark.timeout(90)


async def phone_at(port: int, transport: str = "UDP", user: str = "1001") -> Phone:
    return Phone(await SipClient.open(("127.0.0.1", port), transport), user, PASSWORDS[user])


async def register(port: int, transport: str, expires: int = 600) -> str:
    """Register 1001 once; returns the contact URI the server stored."""
    phone = await phone_at(port, transport)
    try:
        resp = await phone.register(expires=expires)
        assert resp is not None and resp.status == 200, resp
        return phone.own_contact[1:-1]
    finally:
        await phone.client.close()


async def query(port: int, transport: str = "UDP") -> dict[str, int]:
    """A query REGISTER (no Contact) from a new phone (new Call-ID): the bindings with seconds left."""
    phone = await phone_at(port, transport)
    try:
        resp = await phone.register(None)
        assert resp is not None and resp.status == 200, resp
        return contact_expires(resp)
    finally:
        await phone.client.close()


async def test_memory_state_file_survives_restart(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    async with serve_process(config, port):
        udp = await register(port, "UDP")
        tcp = await register(port, "TCP")
        assert set(await query(port)) == {udp, tcp}
    assert (tmp_path / "state" / "location.msgpack").exists()
    async with serve_process(config, port):
        listed = await query(port)
        assert set(listed) == {udp, tcp}  # the TCP binding is kept; its connection is gone (flow dead)
        assert all(0 < left <= 600 for left in listed.values())


async def test_memory_without_state_file_forgets(tmp_path: Path) -> None:
    """The control: the same restart with ``state_file: null`` loses the binding."""
    port = free_port()
    config = write_config(tmp_path, port, location="{backend: memory, state_file: null}")
    async with serve_process(config, port):
        await register(port, "UDP")
        assert len(await query(port)) == 1
    async with serve_process(config, port):
        assert await query(port) == {}


async def test_redis_bindings_survive_restart(tmp_path: Path, redis_prefix: str) -> None:
    port = free_port()
    config = write_config(
        tmp_path, port, location=f"{{backend: redis, url: '{REDIS_URL}', key_prefix: '{redis_prefix}'}}"
    )
    async with serve_process(config, port):
        contact = await register(port, "UDP")
    async with serve_process(config, port):
        listed = await query(port)
        assert list(listed) == [contact] and 0 < listed[contact] <= 600


async def test_redis_shared_by_two_processes(tmp_path: Path, redis_prefix: str) -> None:
    location = f"{{backend: redis, url: '{REDIS_URL}', key_prefix: '{redis_prefix}'}}"
    port_a, port_b = free_port(), free_port()
    config_a = write_config(tmp_path / "a", port_a, location=location)
    config_b = write_config(tmp_path / "b", port_b, location=location)
    async with serve_process(config_a, port_a), serve_process(config_b, port_b):
        contact = await register(port_a, "UDP")
        assert list(await query(port_b)) == [contact]  # made on A, listed by B
        # both processes share the nonce secret: a challenge from A is accepted by B
        a, b = await phone_at(port_a), await phone_at(port_b)
        try:
            challenge = await a.client.request(a.build(expires=600))
            assert challenge is not None and challenge.status == 401
            b.call_id = a.call_id
            b.cseq = a.cseq
            resp = await b.client.request(b.build(None, authorization=b.answer(challenge)))
            assert resp is not None and resp.status == 200 and list(contact_expires(resp)) == [contact]
            # removed on B: gone on A too
            removed = await b.register(["*"], expires=0)
            assert removed is not None and removed.status == 200
            assert await query(port_a) == {}
        finally:
            await a.client.close()
            await b.client.close()
