"""Hostile and broken REGISTERs: each gets a precise answer, stores nothing, and the server stays up.

Every case is sent *authenticated* (a fresh valid Authorization), so the refusal comes from the check
under test and not from the digest challenge in front of it.
"""

from __future__ import annotations

import re
import time

import pytest

from sipcore.digest import parse_challenge
from tests.registrar_sip.client import DEFAULT, Phone
from tests.registrar_sip.configs import MAX_CONTACTS, MAX_EXPIRES
from tests.registrar_sip.conftest import Running

AOR = "sip:1001@demo.sipcore.test"


def bindings(running: Running) -> list:  # type: ignore[type-arg]
    return running.service.store.lookup(AOR, time.time())  # type: ignore[union-attr]


async def authorized(phone: Phone) -> str:
    challenge = await phone.client.request(phone.build(expires=600))
    assert challenge is not None and challenge.status == 401
    return phone.answer(challenge)


async def still_serves(phone: Phone) -> None:
    resp = await phone.register(expires=600)
    assert resp is not None and resp.status == 200


async def test_cseq_out_of_order_within_call_id_is_500(registrar: Running) -> None:
    phone = await registrar.phone()
    try:
        ok = await phone.register(expires=600)
        assert ok is not None and ok.status == 200
        [before] = bindings(registrar)
        auth = await authorized(phone)
        resp = await phone.client.request(phone.build(expires=1800, authorization=auth, cseq=before.cseq))
        assert resp is not None and resp.status == 500 and resp.headers.get("retry-after") is not None
        auth = await authorized(phone)
        resp = await phone.client.request(phone.build(expires=1800, authorization=auth, cseq=before.cseq - 1))
        assert resp is not None and resp.status == 500
        assert bindings(registrar) == [before]  # untouched: same CSeq, same expiry
    finally:
        await phone.client.close()


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_thousands_of_contacts_is_403_and_stores_nothing(registrar: Running, transport: str) -> None:
    phone = await registrar.phone(transport=transport)
    try:
        many = [f"<sip:c{n}@10.0.0.1:5060>" for n in range(2000)]  # ~52 KB: under the 64 KB message limit
        auth = await authorized(phone)
        resp = await phone.client.request(phone.build([", ".join(many)], 600, auth), 5)
        assert resp is not None and resp.status == 403, resp
        assert bindings(registrar) == []
        exactly = [f"<sip:c{n}@10.0.0.1:5060>" for n in range(MAX_CONTACTS)]
        assert (await phone.register(exactly, 600)).status == 200  # type: ignore[union-attr]
        assert len(bindings(registrar)) == MAX_CONTACTS
    finally:
        await phone.client.close()


@pytest.mark.parametrize(
    ("contact_params", "expires_header", "reason"),
    [
        (";q=2", "600", "q-value"),
        (";q=-1", "600", "q-value"),
        (";q=0.12345", "600", "q-value"),
        (";q=abc", "600", "q-value"),
        (";expires=abc", "600", "expires"),
        (";expires=-5", "600", "expires"),
        ("", "abc", "Expires"),
        ("", "-1", "Expires"),
        ("", "1.5", "Expires"),
        ("", "99999999999999999999999999", "Expires"),
    ],
)
async def test_absurd_q_or_expires_is_400_and_stores_nothing(
    registrar: Running, contact_params: str, expires_header: str, reason: str
) -> None:
    phone = await registrar.phone()
    try:
        auth = await authorized(phone)
        resp = await phone.client.request(
            phone.build([phone.own_contact + contact_params], expires_header, auth)
        )
        assert resp is not None and resp.status == 400
        assert reason.lower() in resp.reason.lower()  # the reason phrase names what is wrong
        assert bindings(registrar) == []
        await still_serves(phone)
    finally:
        await phone.client.close()


async def test_huge_contact_expires_parameter_is_clamped_to_max(registrar: Running) -> None:
    """Unlike a huge Expires *header* (400 above), a huge ``expires`` param is read as 2**32-1 and
    clamped to the maximum: see docs/registrar.md ("Expiry")."""
    phone = await registrar.phone()
    try:
        resp = await phone.register([phone.own_contact + ";expires=999999999999999999999999"], 600)
        assert resp is not None and resp.status == 200
        assert [c.expires for c in resp.contacts] == [MAX_EXPIRES]
    finally:
        await phone.client.close()


def _tamper(auth: str, field: str, value: str | None) -> str:
    """Replace (or with None, remove) one field of an Authorization value."""
    pattern = rf'(,\s*)?\b{field}=("[^"]*"|[^,\s]*)'
    if value is None:
        out = re.sub(pattern, "", auth, count=1)
        return out.replace("Digest ,", "Digest ").replace("Digest  ", "Digest ")
    return re.sub(rf'\b{field}=("[^"]*"|[^,\s]*)', f"{field}={value}", auth, count=1)


HOSTILE = [
    ("nonce", '"' + "A" * 10_000 + '"'),
    ("nc", "ffffffffffffffffffffffff"),
    ("nc", "zzzzzzzz"),
    ("nc", "00000000"),
    ("realm", '"evil.example"'),
    ("realm", None),
    ("nonce", None),
    ("response", None),
    ("username", None),
    ("uri", None),
    ("uri", '"sip:elsewhere.example"'),
    ("response", '"' + "0" * 32 + '"'),
    ("algorithm", "MD6"),
    ("qop", "auth-int"),
    ("cnonce", None),
    ("username", '"' + "u" * 5000 + '"'),
]


@pytest.mark.parametrize(("field", "value"), HOSTILE, ids=[f"{f}={str(v)[:12]}" for f, v in HOSTILE])
async def test_hostile_authorization_is_400_or_401_and_stores_nothing(
    registrar: Running, field: str, value: str | None
) -> None:
    phone = await registrar.phone()
    try:
        auth = _tamper(await authorized(phone), field, value)
        resp = await phone.client.request(phone.build(DEFAULT, 600, auth))
        assert resp is not None and resp.status in (400, 401), resp
        if resp.status == 401:  # a fresh, well-formed challenge — never a stale one for a forged nonce
            assert parse_challenge(resp.headers.get("www-authenticate") or "")["nonce"]
        assert bindings(registrar) == []
        await still_serves(phone)
    finally:
        await phone.client.close()


async def test_garbage_authorization_headers_in_a_row_keep_the_server_alive(registrar: Running) -> None:
    phone = await registrar.phone(transport="TCP")
    try:
        for junk in ["Digest", "Basic dXNlcjpwYXNz", 'Digest username="1001", , , ,', "Digest " + "a=b," * 2000,
                     'Digest username="\\"', "\x00\x01\x02"]:  # fmt: skip
            resp = await phone.client.request(phone.build(DEFAULT, 600, junk))
            assert resp is None or resp.status in (400, 401)
        assert bindings(registrar) == []
        await still_serves(phone)
    finally:
        await phone.client.close()


async def test_register_over_the_size_limit_on_tcp_is_513_and_stores_nothing(registrar: Running) -> None:
    phone = await registrar.phone(transport="TCP")
    try:
        many = [f"<sip:c{n}@10.0.0.1:5060>" for n in range(3000)]  # ~80 KB > max_message_size 65535
        phone.client.send(phone.build([", ".join(many)], 600))
        raw = await phone.client.recv_raw(3)
        assert raw is not None and raw.startswith(b"SIP/2.0 513 ")
        assert bindings(registrar) == []
    finally:
        await phone.client.close()
    fresh = await registrar.phone()
    try:
        await still_serves(fresh)
    finally:
        await fresh.client.close()
