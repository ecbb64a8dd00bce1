"""RFC 3327 Path used as the route set: a phone registered through an edge proxy (a separate socket
that inserts ``Path``) is reached through that edge -- its INVITE arrives at the edge with a Route
header naming it and the phone's contact as Request-URI -- forked branches too, with the memory and
the Redis location stores (the Path survives the Redis serialisation). A Path from a UA that did not
say ``Supported: path`` is refused with 420 and stored nowhere (RFC 3327 §5.3)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipcore.message import Response
from tests.proxy_sip.conftest import Platform, platform
from tests.proxy_sip.edge_proxy import EdgeProxy
from tests.proxy_sip.test_shared_location import REDIS_URL, _redis_up
from tests.proxy_sip.ua import Ua

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["memory", "redis"])
async def proxy(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Platform]:
    if request.param == "memory":
        async with platform(tmp_path) as running:
            yield running
        return
    if not _redis_up():
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    import redis.asyncio as aioredis

    prefix = f"sipcore-pathtest-{uuid.uuid4().hex[:12]}:"
    try:
        async with platform(
            tmp_path, location=f'{{backend: redis, url: "{REDIS_URL}", key_prefix: "{prefix}"}}'
        ) as running:
            yield running
    finally:
        client = aioredis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _phone_behind(proxy: Platform, edge: EdgeProxy, extension: str, supported: bool = True) -> Ua:
    phone = await proxy.phone(extension, register=False)
    phone.server = ("127.0.0.1", edge.port)  # everything the phone sends goes through the edge
    if supported:
        phone.register_headers = "Supported: path\n"
    return phone


async def test_invite_goes_through_the_edge_with_the_path_as_route(proxy: Platform) -> None:
    edge = await EdgeProxy.open(proxy.address)
    try:
        bruno = await _phone_behind(proxy, edge, "1002")
        await bruno.register()
        ok = [m for m in bruno.received if isinstance(m, Response) and m.status == 200]
        assert ok and ok[-1].headers.get_all("path") == [f"<{edge.uri}>"]  # echoed (§5.3)

        alice = await proxy.phone("1001")
        dlg = await alice.call("1002")
        final = await alice.response(dlg.call_id)
        assert final.status == 200, final.start_line()
        invite = next(r for r in edge.from_registrar if r.method == "INVITE")
        assert invite.headers.get_all("route") == [f"<{edge.uri}>"]
        assert invite.uri == f"sip:1002@127.0.0.1:{bruno.port}"  # the contact, loose routing
        assert (await bruno.request("INVITE")).call_id == dlg.call_id  # relayed by the edge
    finally:
        edge.close()


async def test_forked_branches_each_take_their_own_route(proxy: Platform) -> None:
    """Two contacts of one AOR: the one registered through the edge is rung through it with its
    Route, the one registered directly is rung directly without any Route."""
    edge = await EdgeProxy.open(proxy.address)
    try:
        behind = await _phone_behind(proxy, edge, "1002")
        await behind.register()
        direct = await proxy.phone("1002")  # a second contact of the same AOR, no edge
        direct.mode = "ring"
        behind.mode = "ring"
        alice = await proxy.phone("1001")
        dlg = await alice.call("1002")
        via_edge = await behind.request("INVITE")
        straight = await direct.request("INVITE")
        assert via_edge.call_id == straight.call_id == dlg.call_id
        assert "route" not in straight.headers
        relayed = next(r for r in edge.from_registrar if r.method == "INVITE")
        assert relayed.headers.get_all("route") == [f"<{edge.uri}>"]
        assert relayed.uri == f"sip:1002@127.0.0.1:{behind.port}"
        assert not [r for r in edge.from_registrar if r.uri.endswith(f":{direct.port}")]
    finally:
        edge.close()


async def test_path_without_supported_path_is_refused_with_420(proxy: Platform) -> None:
    edge = await EdgeProxy.open(proxy.address)
    try:
        bruno = await _phone_behind(proxy, edge, "1002", supported=False)
        with pytest.raises(AssertionError):
            await bruno.register()  # 401, then 420 instead of 200
        refused = [m for m in bruno.received if isinstance(m, Response) and m.status == 420]
        assert refused and refused[0].headers.get("unsupported") == "path"
        alice = await proxy.phone("1001")
        dlg = await alice.call("1002")
        final = await alice.response(dlg.call_id)
        assert final.status == 480, final.start_line()  # nothing was stored
        assert not edge.from_registrar
    finally:
        edge.close()


async def test_the_unsolicited_notify_copy_goes_through_the_edge_too(tmp_path: Path) -> None:
    """Message waiting: the media service's NOTIFY copy to a contact registered with a Path takes the
    same route set as a call (memory store)."""
    from tests.proxy_sip.test_message_waiting import is_request, unsolicited, with_media

    async with with_media(tmp_path) as (proxy, media):
        edge = await EdgeProxy.open(proxy.address)
        try:
            phone = await _phone_behind(proxy, edge, "1002")
            await phone.register()
            call_id = unsolicited(media, "demo-1002", proxy.address)
            assert (await media.response(call_id, "NOTIFY")).status == 200
            assert (await phone.expect(is_request("NOTIFY", call_id), 5, "NOTIFY")).call_id == call_id
            relayed = next(r for r in edge.from_registrar if r.method == "NOTIFY")
            assert relayed.headers.get_all("route") == [f"<{edge.uri}>"]
            assert relayed.uri == f"sip:1002@127.0.0.1:{phone.port}"
        finally:
            edge.close()
