"""Every routing case that ends in the media service, end to end: a phone registers, calls through
the proxy (digest, routing, forwarding), and the media service answers — the message lands in the
mailbox routing named, from the caller the proxy asserted; 2222 opens the caller's own mailbox;
2020 and a conference DID seat the caller in a room. Each media leg ends as an answered CDR."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from calls.call_ended import CallEnded
from media.wav import read_wav
from sipcore.message import Response
from tests.media_sip.conftest import Platform, media_platform
from tests.media_sip.phone import MediaPhone, _crlf_len, power

TRUNK = """\
trunks:
  carrier: {address: "127.0.0.2:5090", inbound_sources: [127.0.0.2]}
"""


async def leave_message(phone: MediaPhone, dialed: str, seconds: float = 1.5) -> None:
    dlg = await phone.call(dialed)
    resp = await phone.response(dlg.call_id, final=True, timeout=10)
    assert resp.status == 200, resp.start_line()
    phone.ack(dlg, resp)
    phone.start_media(resp)
    await record_tone(phone, seconds)
    await phone.wait_bye(dlg.call_id, timeout=8)


async def record_tone(phone: MediaPhone, seconds: float) -> None:
    await asyncio.sleep(0.3)
    await phone.press("#")  # past the greeting
    await phone.silence(0.6)
    await phone.tone(1000.0, seconds)
    await phone.press("#")


def assert_message(platform: Platform, box: str, caller: str, seconds: float) -> None:
    msgs = platform.media.store.messages(box)
    assert len(msgs) == 1, f"{box}: {msgs}"
    assert msgs[0].caller == caller
    assert seconds <= msgs[0].duration <= seconds + 0.9
    pcm, _ = read_wav(msgs[0].path)
    assert power(pcm, 1000.0) > 20 * power(pcm, 1700.0)


def answered_media_leg(ended: list[CallEnded], callee_account: str | None = None) -> CallEnded:
    legs = [e for e in ended if e.disposition == "answered"]
    assert legs, ended
    if callee_account is not None:
        legs = [e for e in legs if e.callee_account_id == callee_account] or legs
    return legs[-1]


async def test_busy_goes_to_the_callees_voicemail(tmp_path: Path) -> None:
    async with media_platform(tmp_path) as platform:
        ended: list[CallEnded] = []
        platform.app.proxy.call_ended_sinks.append(ended.append)
        busy = await platform.phone("1004")
        busy.mode = "busy"
        caller = await platform.phone("1002")
        await leave_message(caller, "1004")
        answer = next(
            m
            for m in caller.received
            if isinstance(m, Response) and m.status == 200 and m.cseq[1] == "INVITE"
        )
        assert answer.headers.get_all("record-route"), (
            "the media service's 2xx must carry the Record-Route set"
        )
        assert_message(platform, "demo-1004", "1002", 1.5)
        await asyncio.sleep(0.3)
        leg = answered_media_leg(ended)
        assert leg.account_id == "demo/1002" and leg.hangup_by in ("callee", "caller", "system")


async def test_no_answer_goes_to_voicemail(tmp_path: Path) -> None:
    async with media_platform(tmp_path) as platform:
        ringing = await platform.phone("1005")
        ringing.mode = "ring"
        caller = await platform.phone("1002")
        await leave_message(caller, "1005")
        assert_message(platform, "demo-1005", "1002", 1.5)


async def test_unreachable_goes_to_voicemail(tmp_path: Path) -> None:
    async with media_platform(tmp_path) as platform:
        caller = await platform.phone("1002")
        await leave_message(caller, "1006")  # 1006 never registered
        assert_message(platform, "demo-1006", "1002", 1.5)


async def test_follow_me_ends_in_voicemail(tmp_path: Path) -> None:
    async with media_platform(tmp_path) as platform:
        step = await platform.phone("1003")
        step.mode = "ring"
        caller = await platform.phone("1002")
        await leave_message(caller, "1007")
        assert_message(platform, "demo-1007", "1002", 1.5)
        assert step.requests("INVITE"), "the follow-me step rang first"


async def test_did_to_voicemail_from_the_carrier(tmp_path: Path) -> None:
    async with media_platform(tmp_path, extra_media=TRUNK) as platform:
        carrier = await MediaPhone.open_media("carrier", "", ("127.0.0.1", platform.port), host="127.0.0.2")
        platform.phones.append(carrier)
        call_id, tag = secrets.token_hex(8), secrets.token_hex(4)
        body = carrier.offer()
        target = f"sip:+33184000070@127.0.0.1:{platform.port}"
        carrier.send(
            f"INVITE {target} SIP/2.0\nVia: {carrier._via('z9hG4bK' + secrets.token_hex(6))}\nMax-Forwards: 70\n"
            f"From: <sip:+33612345678@carrier.example>;tag={tag}\nTo: <{target}>\nCall-ID: {call_id}\n"
            f"CSeq: 1 INVITE\nContact: <sip:carrier@127.0.0.2:{carrier.port}>\nContent-Type: application/sdp\n"
            f"Content-Length: {_crlf_len(body)}\n\n{body}"
        )
        resp = await carrier.response(call_id, final=True, timeout=10)
        assert resp.status == 200, resp.start_line()
        from tests.proxy_sip.ua import Dialog

        dlg = Dialog(call_id, tag, "+33184000070", 1, "")
        dlg.from_header = f"<sip:+33612345678@carrier.example>;tag={tag}"
        carrier.ack(dlg, resp)
        carrier.start_media(resp)
        await record_tone(carrier, 1.5)
        await carrier.wait_bye(call_id, timeout=8)
        msgs = platform.media.store.messages("demo-1001")
        assert len(msgs) == 1 and msgs[0].caller.endswith("33612345678")


async def test_conference_short_code_seats_callers_of_one_customer_together(tmp_path: Path) -> None:
    async with media_platform(tmp_path) as platform:
        a, b = await platform.phone("1001"), await platform.phone("1002")
        for phone in (a, b):
            dlg = await phone.call("2020")
            resp = await phone.response(dlg.call_id, final=True, timeout=10)
            assert resp.status == 200, resp.start_line()
            phone.ack(dlg, resp)
            phone.start_media(resp)
        await asyncio.sleep(1.5)
        start = a.loop_time() + 0.3
        await asyncio.gather(a.tone(700.0, 1.5), b.tone(1900.0, 1.5))
        heard_a, heard_b = a.heard(since=start), b.heard(since=start)
        assert power(heard_a, 1900.0) > 20 * max(power(heard_a, 700.0), 1.0)
        assert power(heard_b, 700.0) > 20 * max(power(heard_b, 1900.0), 1.0)
        room = platform.media.rooms.get("demo")
        assert room is not None and len(room) == 2


async def test_2222_opens_the_callers_own_mailbox(tmp_path: Path) -> None:
    async with media_platform(tmp_path) as platform:
        caller = await platform.phone("1002")
        await leave_message(caller, "1006")
        owner = await platform.phone("1006")
        dlg = await owner.call("2222")
        resp = await owner.response(dlg.call_id, final=True, timeout=10)
        assert resp.status == 200, resp.start_line()
        owner.ack(dlg, resp)
        owner.start_media(resp)
        await asyncio.sleep(0.5)
        session = platform.media.sessions.get(dlg.call_id)
        assert session is not None and session.kind == "mailbox" and session.box == "demo-1006"
        ended: list[CallEnded] = []
        platform.app.proxy.call_ended_sinks.append(ended.append)
        owner.in_dialog(dlg, "BYE")  # through the proxy (the Record-Route set): the proxy's call ends too
        assert (await owner.response(dlg.call_id, "BYE", final=True, timeout=5)).status == 200
        await asyncio.sleep(0.2)
        assert dlg.call_id not in platform.app.proxy.controller.calls
        (leg,) = [e for e in ended if e.call_id == dlg.call_id]
        assert leg.hangup_by == "caller" and leg.normalised == "mailbox-demo-1006"


async def test_conference_pin_chooses_the_room(tmp_path: Path) -> None:
    async with media_platform(tmp_path) as platform:
        phone = await platform.phone("2001", domain="club.sipcore.test")
        dlg = await phone.call("2020")
        resp = await phone.response(dlg.call_id, final=True, timeout=10)
        assert resp.status == 200, resp.start_line()
        phone.ack(dlg, resp)
        phone.start_media(resp)
        await asyncio.sleep(0.5)
        for key in "9999#":  # a wrong PIN first: asked again
            await phone.press(key)
        await asyncio.sleep(0.3)
        assert platform.media.rooms.get("club/red") is None
        for key in "1111#":
            await phone.press(key)
        await asyncio.sleep(0.5)
        room = platform.media.rooms.get("club/red")
        assert room is not None and len(room) == 1
        assert platform.media.rooms.get("club/blue") is None
