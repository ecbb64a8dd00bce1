"""RFC 3261 §10.3 over real sockets: refresh, the 200's binding list, unregister, wildcard, expiry limits.

Each test checks the wire answer *and* the location store, so "answered 200 but stored nothing" (or
"refused but stored anyway") cannot pass.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.registrar_sip.client import contact_expires
from tests.registrar_sip.configs import MAX_EXPIRES, MIN_EXPIRES
from tests.registrar_sip.conftest import Running, app_running

AOR = "sip:1001@demo.sipcore.test"


def stored(running: Running, aor: str = AOR) -> list:  # type: ignore[type-arg]
    return running.service.store.lookup(aor, time.time())  # type: ignore[union-attr]


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_register_with_auth_stores_binding_on_its_flow(registrar: Running, transport: str) -> None:
    phone = await registrar.phone(transport=transport)
    try:
        resp = await phone.register(expires=300)
        assert resp is not None and resp.status == 200, resp
        assert phone.last_challenge is not None and phone.last_challenge.status == 401
        [binding] = stored(registrar)
        assert binding.flow.transport == transport.lower()
        assert binding.flow.source_port == phone.client.local_port
        assert (binding.flow.connection_id is not None) == (transport == "TCP")
        assert contact_expires(resp) == {phone.own_contact[1:-1]: 300}
    finally:
        await phone.client.close()


async def test_refresh_keeps_one_binding_with_new_expiry(registrar: Running) -> None:
    phone = await registrar.phone()
    try:
        first = await phone.register(expires=300)
        assert first is not None and first.status == 200
        [before] = stored(registrar)
        refreshed = await phone.register(expires=1200)  # same Call-ID, higher CSeq
        assert refreshed is not None and refreshed.status == 200
        assert contact_expires(refreshed) == {phone.own_contact[1:-1]: 1200}
        [after] = stored(registrar)
        assert after.call_id == before.call_id and after.cseq > before.cseq
        assert after.expires_at - before.expires_at >= 899
    finally:
        await phone.client.close()


async def test_200_lists_every_binding_with_remaining_expires_and_date(registrar: Running) -> None:
    desk = await registrar.phone()
    soft = await registrar.phone(transport="TCP")
    try:
        started = time.time()
        assert (r := await desk.register(expires=900)) is not None and r.status == 200
        resp = await soft.register([f"{soft.own_contact};q=0.5"], expires=120)
        elapsed = time.time() - started
        assert resp is not None and resp.status == 200
        listed = contact_expires(resp)
        # the desk phone's binding is listed with what is *left* of its 900 s, not with 900 again
        assert 900 - elapsed - 1 <= listed[desk.own_contact[1:-1]] <= 900
        assert listed[soft.own_contact[1:-1]] == 120
        assert any("q=0.5" in c for c in resp.headers.get_all("contact"))
        date = resp.headers.get("date")
        assert date is not None and date.endswith(" GMT")
        query = await desk.register(None)  # no Contact: a query lists what is stored, changes nothing
        assert query is not None and query.status == 200 and set(contact_expires(query)) == set(listed)
        assert len(stored(registrar)) == 2
    finally:
        await desk.client.close()
        await soft.client.close()


async def test_expires_zero_removes_only_that_binding(registrar: Running) -> None:
    a, b = await registrar.phone(), await registrar.phone()
    try:
        assert (await a.register(expires=600)).status == 200  # type: ignore[union-attr]
        assert (await b.register(expires=600)).status == 200  # type: ignore[union-attr]
        resp = await a.register([f"{a.own_contact};expires=0"])
        assert resp is not None and resp.status == 200
        assert set(contact_expires(resp)) == {b.own_contact[1:-1]}
        assert [x.contact for x in stored(registrar)] == [b.own_contact[1:-1]]
        resp = await b.register(expires=0)  # Expires header 0 also removes
        assert resp is not None and resp.status == 200 and resp.contacts == []
        assert stored(registrar) == []
    finally:
        await a.client.close()
        await b.client.close()


async def test_wildcard_with_expires_zero_removes_all(registrar: Running) -> None:
    a, b = await registrar.phone(), await registrar.phone(transport="TCP")
    try:
        assert (await a.register(expires=600)).status == 200  # type: ignore[union-attr]
        assert (await b.register(expires=600)).status == 200  # type: ignore[union-attr]
        assert len(stored(registrar)) == 2
        resp = await a.register(["*"], expires=0)
        assert resp is not None and resp.status == 200 and resp.contacts == []
        assert stored(registrar) == []
    finally:
        await a.client.close()
        await b.client.close()


@pytest.mark.parametrize("expires", [None, 60, 3600])
async def test_wildcard_without_expires_zero_is_400_and_removes_nothing(
    registrar: Running, expires: int | None
) -> None:
    phone = await registrar.phone()
    try:
        assert (await phone.register(expires=600)).status == 200  # type: ignore[union-attr]
        resp = await phone.register(["*"], expires=expires)
        assert resp is not None and resp.status == 400
        assert len(stored(registrar)) == 1
    finally:
        await phone.client.close()


@pytest.mark.parametrize("where", ["header", "param"])
async def test_expires_below_min_is_423_with_min_expires(registrar: Running, where: str) -> None:
    phone = await registrar.phone()
    try:
        short = MIN_EXPIRES - 1
        if where == "header":
            resp = await phone.register(expires=short)
        else:
            resp = await phone.register([f"{phone.own_contact};expires={short}"], expires=600)
        assert resp is not None and resp.status == 423
        assert resp.headers.get("min-expires") == str(MIN_EXPIRES)
        assert stored(registrar) == []
        ok = await phone.register(expires=MIN_EXPIRES)  # exactly the minimum is accepted
        assert ok is not None and ok.status == 200
        assert contact_expires(ok) == {phone.own_contact[1:-1]: MIN_EXPIRES}
    finally:
        await phone.client.close()


async def test_expires_above_max_is_clamped(registrar: Running) -> None:
    phone = await registrar.phone()
    try:
        resp = await phone.register(expires=MAX_EXPIRES * 10)
        assert resp is not None and resp.status == 200
        assert contact_expires(resp) == {phone.own_contact[1:-1]: MAX_EXPIRES}
        [binding] = stored(registrar)
        assert binding.expires_at - time.time() <= MAX_EXPIRES
    finally:
        await phone.client.close()


async def test_no_expires_gets_the_configured_default(registrar: Running) -> None:
    from tests.registrar_sip.configs import DEFAULT_EXPIRES

    phone = await registrar.phone()
    try:
        resp = await phone.register()
        assert resp is not None and resp.status == 200
        assert contact_expires(resp) == {phone.own_contact[1:-1]: DEFAULT_EXPIRES}
    finally:
        await phone.client.close()


async def test_200_reports_what_is_left_of_an_older_binding(registrar: Running) -> None:
    """A binding written 800 s ago for 900 s is listed with expires=100, not its original 900."""
    from registrar.location import ContactChange, Flow, RegisterChanges

    then = time.time() - 800
    old = RegisterChanges("old-call@desk", 1, Flow("udp", "192.0.2.7", 5060, "127.0.0.1:5060"),
                          (ContactChange("sip:1001@192.0.2.7:5060", 900),))  # fmt: skip
    registrar.service.store.register(AOR, old, then)  # type: ignore[union-attr]
    phone = await registrar.phone()
    try:
        query = await phone.register(None)
        assert query is not None and query.status == 200
        left = contact_expires(query)["sip:1001@192.0.2.7:5060"]
        assert 98 <= left <= 100
    finally:
        await phone.client.close()


async def test_jitter_shortens_granted_expiries_within_the_configured_share(tmp_path: Path) -> None:
    """With 10 % jitter, 1000 s is granted as 900..1000 s, and phones get different values."""
    async with app_running(tmp_path, jitter_percent=10) as running:
        granted = []
        for _ in range(12):
            phone = await running.phone()
            try:
                resp = await phone.register(expires=1000)
                assert resp is not None and resp.status == 200
                granted.append(contact_expires(resp)[phone.own_contact[1:-1]])
                # unregister again to stay under max_contacts
                assert (await phone.register(expires=0)).status == 200  # type: ignore[union-attr]
            finally:
                await phone.client.close()
        assert all(900 <= g <= 1000 for g in granted), granted
        assert len(set(granted)) > 1, granted  # 12 equal draws out of 101 values: ~1e-22


async def test_above_max_is_clamped_then_jittered_as_docs_registrar_says(tmp_path: Path) -> None:
    """docs/registrar.md: above expires.max is clamped to max, then the jitter shortens it like any
    granted expiry, so the 200 says max - up to 10 % (3240..3600 s), not max itself."""
    async with app_running(tmp_path, jitter_percent=10) as running:
        granted = []
        for _ in range(12):
            phone = await running.phone()
            try:
                resp = await phone.register(expires=MAX_EXPIRES * 10)
                assert resp is not None and resp.status == 200
                granted.append(contact_expires(resp)[phone.own_contact[1:-1]])
                assert (await phone.register(expires=0)).status == 200  # type: ignore[union-attr]
            finally:
                await phone.client.close()
        assert all(MAX_EXPIRES - MAX_EXPIRES // 10 <= g <= MAX_EXPIRES for g in granted), granted
        assert any(g < MAX_EXPIRES for g in granted), granted  # 12 draws of exactly max: ~1e-25
