"""Trunks for real carriers, over real sockets: an ordered set of trunks with failover (a SIPp carrier
answering 503, a silent one), a final 4xx not failed over, OPTIONS probes taking a dead trunk out of
rotation and bringing it back, priority and weight, a carrier recognised by address and port (a phone
on the carrier's host is a phone), the number format and caller-ID rules each carrier gets, and the
outbound registration a carrier answers (digest, refresh, backoff).

Carriers are Python UAs (``ua.py``) or SIPp UAS on 127.0.0.2 ports; phones are Python UAs."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from server.app import Application, load_application_config
from server.proxy_service import TRUNK_FAILOVERS, TRUNK_REGISTRATIONS, TRUNK_TRANSITIONS
from sipcore.digest import compute_response, parse_authorization
from sipcore.message import Request
from tests.conftest import free_port
from tests.proxy_sip import sipp_party
from tests.proxy_sip.configs import TRUNK_HOST, password, proxy_yaml, write_config
from tests.proxy_sip.conftest import Platform
from tests.proxy_sip.ua import Ua, trunk_invite

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
async def _no_sipp_left_behind() -> AsyncIterator[None]:
    yield
    await sipp_party.stop_all()


def _user_of(value: str | None) -> str:
    assert value is not None
    return value.split("sip:", 1)[1].split("@", 1)[0]


@contextlib.asynccontextmanager
async def carriers(
    directory: Path, proxy_trunks: str, trunks: Callable[[dict[str, int]], str], names: tuple[str, ...] = ("a", "b"),
    sipp_ports: dict[str, int] | None = None,
) -> AsyncIterator[tuple[Platform, dict[str, Ua]]]:  # fmt: skip
    """The proxy with the trunks ``trunks(ports)`` writes (a YAML block under ``trunks:``) and the
    ``proxy:`` lines ``proxy_trunks``; each name gets a carrier UA on 127.0.0.2 (its port in
    ``ports``), except those given a SIPp port in ``sipp_ports``."""
    port = free_port()
    uas = {
        n: await Ua.open(n, "", ("127.0.0.1", port), host=TRUNK_HOST)
        for n in names
        if n not in (sipp_ports or {})
    }
    ports = {n: ua.port for n, ua in uas.items()} | (sipp_ports or {})
    path = write_config(directory, port, 1)
    text = proxy_yaml(port, 1, directory / "state")
    start, end = text.index("  outbound_trunk: carrier\n"), text.index("rating:\n")
    path.write_text(text[:start] + proxy_trunks + "trunks:\n" + trunks(ports) + text[end:], encoding="utf-8")
    app = Application(load_application_config(str(path)))
    await app.start()
    anyone = next(iter(uas.values())) if uas else await Ua.open("x", "", ("127.0.0.1", port), host=TRUNK_HOST)
    running = Platform(app, port, anyone)
    app.proxy.call_ended_sinks.append(running.ended.append)
    try:
        yield running, uas
    finally:
        for ua in running.uas:
            ua.close()
        for ua in (*uas.values(), anyone):
            ua.close()
        await app.close()


def _failover_trunks(ports: dict[str, int], extra: str = "") -> str:
    return "".join(
        f"  {n}: {{address: '{TRUNK_HOST}:{p}', inbound_sources: ['{TRUNK_HOST}:{p}'], failover_timeout: 1{extra}}}\n"
        for n, p in ports.items()
    )


ORDERED = "  outbound_trunks: [{trunk: a, priority: 1}, {trunk: b, priority: 2}]\n"


async def _answered_call(platform: Platform, dialed: str = "0612345678", extension: str = "1001") -> None:
    phone = await platform.phone(extension)
    dlg = await phone.call(dialed)
    ok = await phone.response(dlg.call_id, timeout=5)
    assert ok.status == 200, ok.start_line()
    phone.ack(dlg, ok)


# ---- failover --------------------------------------------------------------------------------------
async def test_sipp_carrier_answering_503_fails_over_to_the_second(sipp_binary: str, tmp_path: Path) -> None:
    ports = {"a": free_port(), "b": free_port()}
    before = TRUNK_FAILOVERS.labels("a", "503")._value.get()
    async with carriers(tmp_path / "app", ORDERED, _failover_trunks, sipp_ports=ports) as (proxy, _):
        failing = await sipp_party.start(sipp_binary, tmp_path / "a", "trunk_503.xml", host=TRUNK_HOST,
                                         port=ports["a"], expect={"NUMBER": "+33612345678"})  # fmt: skip
        good = await sipp_party.start(sipp_binary, tmp_path / "b", "trunk_uas.xml", host=TRUNK_HOST, port=ports["b"],
                                      expect={"NUMBER": "+33612345678", "CALLER": "+33184000001"})  # fmt: skip
        target = f"127.0.0.1:{proxy.port}"
        inf = sipp_party.credentials(tmp_path, "1001", password("1001"))
        uac = await sipp_party.start(sipp_binary, tmp_path / "uac", "uac.xml", target, "-inf", str(inf),
                                     "-s", "0612345678", port=free_port(), expect={"PROXY": target})  # fmt: skip
        assert await uac.result() == 0, uac.errors()
        assert await failing.result() == 0, failing.errors()
        assert await good.result() == 0, good.errors()
        assert [(e.direction, e.normalised, e.disposition) for e in proxy.ended] == [
            ("outbound", "+33612345678", "answered")
        ]
    assert TRUNK_FAILOVERS.labels("a", "503")._value.get() == before + 1


async def test_a_silent_carrier_is_left_for_the_next_after_its_failover_timeout(tmp_path: Path) -> None:
    async with carriers(tmp_path, ORDERED, _failover_trunks) as (proxy, uas):
        uas["a"].mode = "silent"
        await _answered_call(proxy)
        first, second = await uas["a"].request("INVITE"), await uas["b"].request("INVITE", timeout=3)
        waited = uas["b"].when(second) - uas["a"].when(first)
        assert 0.9 <= waited < 2.5  # failover_timeout: 1 (not the transaction's 32 s)
        assert first.call_id == second.call_id


async def test_a_final_answer_about_the_number_is_not_failed_over(tmp_path: Path) -> None:
    async with carriers(tmp_path, ORDERED, _failover_trunks) as (proxy, uas):
        uas["a"].mode = "busy"  # 486: the number is busy, whatever trunk is asked
        phone = await proxy.phone("1001")
        dlg = await phone.call("0612345678")
        assert (await phone.response(dlg.call_id)).status == 486
        await uas["a"].request("INVITE")
        await asyncio.sleep(0.3)
        assert uas["b"].requests("INVITE") == []


async def test_a_call_withholding_its_identity_avoids_a_trunk_that_refuses_anonymous_calls(
    tmp_path: Path,
) -> None:
    def trunks(ports: dict[str, int]) -> str:
        return _failover_trunks(
            {"a": ports["a"]}, ", caller_id: {anonymous_allowed: false}"
        ) + _failover_trunks({"b": ports["b"]})

    async with carriers(tmp_path, ORDERED, trunks) as (proxy, uas):
        alice = await proxy.phone("1001")
        dlg = await alice.call("0612345678", extra="Privacy: id\n")
        assert (await alice.response(dlg.call_id)).status == 200
        invite = await uas["b"].request("INVITE")
        assert "anonymous" in (invite.headers.get("from") or "").lower()
        assert uas["a"].requests("INVITE") == []
    only_a = "  outbound_trunks: [{trunk: a}]\n"
    async with carriers(tmp_path / "only", only_a, trunks) as (proxy, uas):
        alice = await proxy.phone("1001")
        dlg = await alice.call("0612345678", extra="Privacy: id\n")
        assert (await alice.response(dlg.call_id)).status == 433  # RFC 5079 Anonymity Disallowed
        assert uas["a"].requests("INVITE") == []


# ---- probes ------------------------------------------------------------------------------------------
async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"not {what} within {timeout}s"
        await asyncio.sleep(0.05)


async def test_probes_take_a_dead_trunk_out_of_rotation_and_bring_it_back(tmp_path: Path) -> None:
    def trunks(ports: dict[str, int]) -> str:
        return _failover_trunks(
            {"a": ports["a"]}, ", probe_interval: 1, probe_failures: 2"
        ) + _failover_trunks({"b": ports["b"]})

    downs, ups = (
        TRUNK_TRANSITIONS.labels("a", "down")._value.get(),
        TRUNK_TRANSITIONS.labels("a", "up")._value.get(),
    )
    async with carriers(tmp_path, ORDERED, trunks) as (proxy, uas):
        controller = proxy.app.proxy.controller
        probe = await uas["a"].request("OPTIONS", timeout=2)
        assert probe.uri == f"sip:{TRUNK_HOST}:{uas['a'].port}"
        await _answered_call(proxy)
        await uas["a"].request("INVITE")  # up: it takes the calls
        port = uas["a"].port
        uas["a"].close()  # the carrier dies
        await _until(lambda: "a" in controller.down_trunks, 5, "taken out")
        assert TRUNK_TRANSITIONS.labels("a", "down")._value.get() == downs + 1
        await _answered_call(proxy, extension="1002")
        await uas["b"].request("INVITE")  # straight to the second: no wait on the dead one
        revived = await Ua.open("a", "", ("127.0.0.1", proxy.port), host=TRUNK_HOST, port=port)
        proxy.uas.append(revived)
        await revived.request("OPTIONS", timeout=3)
        await _until(lambda: "a" not in controller.down_trunks, 3, "brought back")
        assert TRUNK_TRANSITIONS.labels("a", "up")._value.get() == ups + 1
        await _answered_call(proxy, extension="1003")
        await revived.request("INVITE")


async def test_priority_then_weight_choose_the_trunk(tmp_path: Path) -> None:
    ordered = (
        "  outbound_trunks: [{trunk: a, priority: 1, weight: 1}, {trunk: b, priority: 1, weight: 3},"
        " {trunk: c, priority: 2}]\n"
    )
    async with carriers(tmp_path, ordered, _failover_trunks, names=("a", "b", "c")) as (proxy, uas):
        draws = iter([0.1, 0.9, 0.5, 0.2])  # x4: 0.4 -> a (weight 1), 3.6 -> b, 2.0 -> b, 0.8 -> a
        proxy.app.proxy.controller.draw = lambda: next(draws)
        for ext in ("1001", "1002", "1003", "1005"):
            await _answered_call(proxy, extension=ext)
        await _until(
            lambda: len(uas["a"].requests("INVITE")) + len(uas["b"].requests("INVITE")) == 4, 3, "rung"
        )
        assert (len(uas["a"].requests("INVITE")), len(uas["b"].requests("INVITE"))) == (2, 2)
        assert uas["c"].requests("INVITE") == []  # priority 2: only when both others fail


# ---- recognised by address and port -------------------------------------------------------------------
async def test_a_phone_on_the_carriers_host_but_another_port_is_a_phone(tmp_path: Path) -> None:
    only_a = "  outbound_trunks: [{trunk: a}]\n"
    async with carriers(tmp_path, only_a, _failover_trunks, names=("a",)) as (proxy, uas):
        alice = await proxy.phone("1001")
        on_carrier_host = await Ua.open("1002", password("1002"), proxy.address, host=TRUNK_HOST)
        proxy.uas.append(on_carrier_host)
        await on_carrier_host.register()  # a phone: challenged and registered
        dlg = await on_carrier_host.call("1001")  # challenged (407) like any phone, then rings 1001
        assert (await on_carrier_host.response(dlg.call_id)).status == 200
        assert _user_of((await alice.request("INVITE")).headers.get("from")) == "1002"
        inbound = trunk_invite(
            uas["a"], "+33184000001", "+33699000001"
        )  # from the carrier's port: no challenge
        assert (await uas["a"].response(inbound.call_id)).status == 200
        assert _user_of((await alice.request("INVITE")).headers.get("from")) == "+33699000001"


# ---- number formats and caller ID ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rules", "number", "caller"),
    [
        ("number_format: e164", "+33612345678", "+33184000001"),
        ("number_format: e164_no_plus", "33612345678", "33184000001"),
        ("number_format: international_00", "0033612345678", "0033184000001"),
        ("number_format: national, country: FR", "0612345678", "0184000001"),
        ("number_format: national, country: FR, caller_id: {format: e164}", "0612345678", "+33184000001"),
    ],
)
async def test_the_carrier_sees_its_number_format(
    tmp_path: Path, rules: str, number: str, caller: str
) -> None:
    only_a = "  outbound_trunks: [{trunk: a}]\n"
    async with carriers(tmp_path, only_a, lambda p: _failover_trunks(p, ", " + rules), names=("a",)) as (
        proxy,
        uas,
    ):
        await _answered_call(proxy)
        invite = await uas["a"].request("INVITE")
        assert invite.uri == f"sip:{number}@{TRUNK_HOST}:{uas['a'].port}"
        assert _user_of(invite.headers.get("to")) == number
        assert _user_of(invite.headers.get("from")) == caller
        assert _user_of(invite.headers.get("p-asserted-identity")) == caller


async def test_a_caller_without_public_number_shows_the_trunks_default(tmp_path: Path) -> None:
    only_a = "  outbound_trunks: [{trunk: a}]\n"
    rules = ", caller_id: {default: '+33184000099'}"
    async with carriers(tmp_path, only_a, lambda p: _failover_trunks(p, rules), names=("a",)) as (proxy, uas):
        await _answered_call(proxy, extension="1002")  # 1002 has no outgoing number nor DID
        invite = await uas["a"].request("INVITE")
        assert _user_of(invite.headers.get("from")) == "+33184000099"
        assert _user_of(invite.headers.get("p-asserted-identity")) == "+33184000099"
        await _answered_call(proxy, extension="1001")  # its own number stays its own
        assert _user_of((await uas["a"].request("INVITE")).headers.get("from")) == "+33184000001"


async def test_sipp_carrier_checks_the_national_format(sipp_binary: str, tmp_path: Path) -> None:
    ports = {"a": free_port()}
    only_a = "  outbound_trunks: [{trunk: a}]\n"
    trunks = lambda p: _failover_trunks(p, ", number_format: national, country: FR")  # noqa: E731
    async with carriers(tmp_path / "app", only_a, trunks, names=("a",), sipp_ports=ports) as (proxy, _):
        carrier = await sipp_party.start(sipp_binary, tmp_path / "a", "trunk_uas.xml", host=TRUNK_HOST, port=ports["a"],
                                         expect={"NUMBER": "0612345678", "CALLER": "0184000001"})  # fmt: skip
        target = f"127.0.0.1:{proxy.port}"
        inf = sipp_party.credentials(tmp_path, "1001", password("1001"))
        uac = await sipp_party.start(sipp_binary, tmp_path / "uac", "uac.xml", target, "-inf", str(inf),
                                     "-s", "0612345678", port=free_port(), expect={"PROXY": target})  # fmt: skip
        assert await uac.result() == 0, uac.errors()
        assert await carrier.result() == 0, carrier.errors()


# ---- outbound registration ----------------------------------------------------------------------------
def _reply(ua: Ua, req: Request, status: int, reason: str, extra: str = "") -> None:
    lines = [f"SIP/2.0 {status} {reason}"] + [f"Via: {v}" for v in req.headers.get_all("via")]
    lines += [
        f"From: {req.headers.get('from')}",
        f"To: {req.headers.get('to')};tag=reg{secrets.token_hex(3)}",
    ]
    lines += [f"Call-ID: {req.call_id}", f"CSeq: {req.headers.get('cseq')}"]
    ua.send("\n".join(lines) + "\n" + extra + "Content-Length: 0\n\n")


async def test_outbound_registration_answered_by_the_carrier(tmp_path: Path) -> None:
    only_a = "  outbound_trunks: [{trunk: a}]\n"
    rules = ", register: {username: trunkuser, password: trunkpw, expires: 60, domain: carrier.test}"
    registered = TRUNK_REGISTRATIONS.labels("a", "registered")._value.get()
    async with carriers(tmp_path, only_a, lambda p: _failover_trunks(p, rules), names=("a",)) as (proxy, uas):
        carrier = uas["a"]
        first = await carrier.request("REGISTER", timeout=2)
        assert first.uri == "sip:carrier.test" and _user_of(first.headers.get("to")) == "trunkuser"
        assert first.headers.get("contact") == f"<sip:trunkuser@127.0.0.1:{proxy.port}>"
        nonce = secrets.token_hex(8)
        _reply(carrier, first, 401, "Unauthorized",
               f'WWW-Authenticate: Digest realm="carrier.test", nonce="{nonce}", qop="auth", algorithm=MD5\n')  # fmt: skip
        second = await carrier.request("REGISTER")
        auth = parse_authorization(second.headers.get("authorization") or "")
        assert (auth["username"], auth["realm"], auth["nonce"]) == ("trunkuser", "carrier.test", nonce)
        expected = compute_response(username="trunkuser", realm="carrier.test", nonce=nonce, method="REGISTER",
                                    uri=auth["uri"], password="trunkpw", algorithm="MD5", qop="auth",
                                    nc=int(auth["nc"], 16), cnonce=auth["cnonce"])  # fmt: skip
        assert auth["response"] == expected and second.call_id == first.call_id
        _reply(carrier, second, 200, "OK", f"Contact: {second.headers.get('contact')};expires=2\n")
        refresh = await carrier.request("REGISTER", timeout=3)  # 80 % of the 2 s granted
        assert carrier.when(refresh) - carrier.when(second) >= 1.0
        assert TRUNK_REGISTRATIONS.labels("a", "registered")._value.get() == registered + 1
        _reply(carrier, refresh, 503, "Service Unavailable")  # refused: retried after 1 s, then 2 s
        retry = await carrier.request("REGISTER", timeout=3)
        assert 0.8 <= carrier.when(retry) - carrier.when(refresh) < 2.0
        _reply(carrier, retry, 503, "Service Unavailable")
        again = await carrier.request("REGISTER", timeout=4)
        assert 1.8 <= carrier.when(again) - carrier.when(retry) < 3.0
