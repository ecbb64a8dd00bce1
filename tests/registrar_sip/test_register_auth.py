"""Digest authentication on the wire: wrong password and unknown user are indistinguishable, and an
authenticated user cannot register someone else's address of record."""

from __future__ import annotations

import re
import time

from sipcore.digest import parse_challenge
from sipcore.message import Response
from tests.registrar_sip.conftest import Running


def _shape(resp: Response) -> tuple[object, ...]:
    """Everything an attacker could compare between two 401s, with the per-request values masked."""
    names = tuple(name.lower() for name, _ in resp.headers if name.lower() not in ("via", "from", "call-id"))
    challenges = tuple(
        re.sub(r'nonce="[^"]*"', 'nonce="N"', v) for v in resp.headers.get_all("www-authenticate")
    )
    to = re.sub(r";tag=[^;]*", "", resp.headers.get("to") or "")
    return resp.status, resp.reason, names, challenges, to.replace("9999", "1001")


async def test_first_register_is_challenged_md5_first_then_sha256(registrar: Running) -> None:
    phone = await registrar.phone()
    try:
        resp = await phone.client.request(phone.build(expires=600))
        assert resp is not None and resp.status == 401
        algorithms = [parse_challenge(v)["algorithm"] for v in resp.headers.get_all("www-authenticate")]
        assert algorithms == ["MD5", "SHA-256"]
        params = parse_challenge(resp.headers.get("www-authenticate") or "")
        assert params["realm"] == "demo.sipcore.test" and params["qop"] == "auth"
    finally:
        await phone.client.close()


async def test_sha256_answer_is_accepted(registrar: Running) -> None:
    from sipcore.digest import build_authorization

    phone = await registrar.phone()
    try:
        challenge = await phone.client.request(phone.build(expires=600))
        assert challenge is not None and challenge.status == 401
        sha = challenge.headers.get_all("www-authenticate")[1]
        auth = build_authorization(
            sha, username="1001", password="demo1001pw", method="REGISTER", uri=phone.ruri
        )
        assert "algorithm=SHA-256" in auth
        resp = await phone.client.request(phone.build(expires=600, authorization=auth))
        assert resp is not None and resp.status == 200
    finally:
        await phone.client.close()


async def test_wrong_password_is_challenged_again_and_stores_nothing(registrar: Running) -> None:
    phone = await registrar.phone()
    try:
        resp = await phone.register(expires=600, password="not-the-password")
        assert resp is not None and resp.status == 401
        assert resp.headers.get("www-authenticate") is not None
        assert registrar.service.store.lookup("sip:1001@demo.sipcore.test", time.time()) == []  # type: ignore[union-attr]
    finally:
        await phone.client.close()


async def test_unknown_user_401_is_identical_to_wrong_password_401(registrar: Running) -> None:
    known = await registrar.phone("1001")
    unknown = await registrar.phone("9999")
    try:
        wrong_pw = await known.register(expires=600, password="guess")
        no_user = await unknown.register(expires=600, password="guess")
        assert wrong_pw is not None and no_user is not None
        assert wrong_pw.status == no_user.status == 401
        assert _shape(wrong_pw) == _shape(no_user)
        # the challenge before any credentials is the same too
        assert known.last_challenge is not None and unknown.last_challenge is not None
        assert _shape(known.last_challenge) == _shape(unknown.last_challenge)
    finally:
        await known.client.close()
        await unknown.client.close()


async def test_registering_another_users_aor_is_403_and_stores_nothing(registrar: Running) -> None:
    phone = await registrar.phone("1001")
    try:
        resp = await phone.register(expires=600, to_user="1002")  # authenticates as 1001, To: 1002
        assert resp is not None and resp.status == 403
        now = time.time()
        store = registrar.service.store
        assert store.lookup("sip:1002@demo.sipcore.test", now) == []  # type: ignore[union-attr]
        assert store.lookup("sip:1001@demo.sipcore.test", now) == []  # type: ignore[union-attr]
    finally:
        await phone.client.close()


async def test_md5_only_user_agents_get_a_single_md5_challenge(registrar: Running) -> None:
    """Clients that abort on an unknown algorithm (baresip) see MD5 only; the same 401 otherwise."""
    baresip = await registrar.phone(user_agent="baresip v1.0.0 (x86_64/linux)")
    other = await registrar.phone(user_agent="Yealink SIP-T46S 66.86.0.15")
    try:
        only_md5 = await baresip.client.request(baresip.build(expires=600))
        both = await other.client.request(other.build(expires=600))
        assert only_md5 is not None and both is not None and only_md5.status == both.status == 401
        assert [parse_challenge(v)["algorithm"] for v in only_md5.headers.get_all("www-authenticate")] == [
            "MD5"
        ]
        assert len(both.headers.get_all("www-authenticate")) == 2
        resp = await baresip.register(expires=600)  # and it can register with it
        assert resp is not None and resp.status == 200
    finally:
        await baresip.client.close()
        await other.client.close()
