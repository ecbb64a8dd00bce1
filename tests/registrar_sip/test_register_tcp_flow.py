"""A phone's TCP connection closes: its bindings lose their flow (kept, marked dead, so the proxy falls
back to the Contact address) and RFC 5626 outbound bindings (reg-id + instance) are removed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registrar.location import Binding
from tests.registrar_sip.conftest import REDIS_URL, Running, app_running, redis_namespace


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Running]:
    if request.param == "memory":
        async with app_running(tmp_path) as running:
            yield running
    else:
        async with redis_namespace() as prefix:
            location = f"{{backend: redis, url: '{REDIS_URL}', key_prefix: '{prefix}'}}"
            async with app_running(tmp_path, location=location) as running:
                yield running


async def until(running: Running, check: object, timeout: float = 3.0) -> list[Binding]:
    """Poll the store (bounded) until ``check(bindings)`` holds; return the last bindings read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        current = await running.bindings()
        if check(current) or loop.time() > deadline:  # type: ignore[operator]
            return current
        await asyncio.sleep(0.02)


async def test_closed_connection_marks_the_flow_dead(backend: Running) -> None:
    tcp = await backend.phone(transport="TCP")
    udp = await backend.phone()
    resp = await tcp.register(expires=600)
    assert resp is not None and resp.status == 200
    assert (await udp.register(expires=600)).status == 200  # type: ignore[union-attr]
    by_transport = {b.flow.transport: b for b in await backend.bindings()}
    assert by_transport["tcp"].flow_alive and by_transport["tcp"].flow.connection_id
    await tcp.client.close()
    try:
        after = await until(
            backend, lambda bs: any(b.flow.transport == "tcp" and not b.flow_alive for b in bs)
        )
        state = {b.flow.transport: b.flow_alive for b in after}
        assert state == {"tcp": False, "udp": True}  # kept, flow dead; the UDP phone is untouched
    finally:
        await udp.client.close()


async def test_closed_connection_removes_outbound_bindings(backend: Running) -> None:
    tcp = await backend.phone(transport="TCP")
    instance = '"<urn:uuid:00000000-0000-1000-8000-00a0c91e6bf6>"'
    resp = await tcp.register([f"{tcp.own_contact};+sip.instance={instance};reg-id=1"], 600)
    assert resp is not None and resp.status == 200
    assert resp.headers.get("require") == "outbound"
    [binding] = await backend.bindings()
    assert binding.is_outbound and binding.reg_id == 1
    await tcp.client.close()
    assert await until(backend, lambda bs: bs == []) == []
