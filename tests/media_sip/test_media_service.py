"""The media service over real UDP, called the way the proxy calls it (INVITE to
``sip:<service>-<key>@media`` with a P-Asserted-Identity): deposits, the mailbox menu, message
waiting, conference rooms, and the protocol edges (RTP timeout, SDP refusal, foreign sources)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from media.mwi import parse_summary
from media.tones import goertzel_power, samples_of
from media.wav import read_wav
from sipcore.message import Request
from tests.media_sip.conftest import MediaRig, media_rig
from tests.media_sip.phone import MediaPhone, _crlf_len, power
from tests.proxy_sip.ua import Dialog

BOX = "demo-1001"


async def deposit(rig: MediaRig, phone: MediaPhone, box: str = BOX, caller: str = "1002",
                  tone_hz: float = 1000.0, seconds: float = 2.0, end: str = "#") -> str:  # fmt: skip
    """Leave a message of ``seconds`` of a tone; return the Call-ID (the service hangs up)."""
    dlg, resp = await phone.invite_service(f"voicemail-{box}", caller=caller)
    assert resp.status == 200, resp.start_line()
    await asyncio.sleep(0.3)
    await phone.press("#")  # skip the greeting: the beep comes at once
    await phone.silence(0.6)  # the beep (400 ms) plays; recording starts after it
    await phone.tone(tone_hz, seconds)
    if end == "#":
        await phone.press("#")
    elif end == "info":
        send_info(phone, dlg, "#")
    else:
        await phone.silence(3.0)  # silence_seconds is 2 in the test YAML
    bye = await phone.wait_bye(dlg.call_id, timeout=8)
    assert bye.method == "BYE"
    return dlg.call_id


def send_info(phone: MediaPhone, dlg: Dialog, digit: str) -> None:
    """A key press as SIP INFO (application/dtmf-relay), for phones that do not send RFC 4733."""
    body = f"Signal={digit}\nDuration=160\n"
    routes = "".join(f"Route: {r}\n" for r in dlg.route_set)
    dlg.cseq += 1
    phone.send(
        f"INFO {dlg.remote_target} SIP/2.0\nVia: {phone._via('z9hG4bK' + secrets.token_hex(6))}\n"
        f"{routes}Max-Forwards: 70\nFrom: {dlg.from_header}\nTo: {dlg.to_header}\nCall-ID: {dlg.call_id}\n"
        f"CSeq: {dlg.cseq} INFO\nContent-Type: application/dtmf-relay\nContent-Length: {_crlf_len(body)}\n\n{body}"
    )


def tone_ratio(pcm: bytes, freq: float) -> float:
    samples = samples_of(pcm)
    total = sum(s * s for s in samples) or 1
    return goertzel_power(samples, freq) * 2 / len(samples) / total


async def test_deposit_records_the_callers_tone_with_caller_and_duration(rig: MediaRig) -> None:
    phone = await rig.phone()
    await deposit(rig, phone, seconds=2.0)
    msgs = rig.service.store.messages(BOX)
    assert len(msgs) == 1
    msg = msgs[0]
    assert msg.caller == "1002" and msg.new
    assert 2.0 <= msg.duration <= 2.8, msg.duration  # the tone, plus what was recorded before it began
    pcm, info = read_wav(msg.path)
    assert info.rate == 8000 and not info.recovered  # read_wav takes only 8 kHz mono 16-bit PCM
    assert abs(info.duration - msg.duration) < 0.05
    middle = pcm[len(pcm) // 2 - 4000 : len(pcm) // 2 + 4000]
    assert power(middle, 1000) > 50 * power(middle, 1500)  # a 1 kHz tone, not noise
    assert tone_ratio(middle, 1000) > 0.8


async def test_deposit_ends_on_silence_and_trims_it(rig: MediaRig) -> None:
    phone = await rig.phone()
    await deposit(rig, phone, seconds=1.5, end="silence")
    (msg,) = rig.service.store.messages(BOX)
    assert 1.4 <= msg.duration <= 2.3, msg.duration  # the 2 s of trailing silence are not kept


async def test_sip_info_dtmf_is_the_fallback(rig: MediaRig) -> None:
    phone = await rig.phone()
    await deposit(rig, phone, seconds=1.5, end="info")
    (msg,) = rig.service.store.messages(BOX)
    assert 1.4 <= msg.duration <= 2.4


async def test_subscription_sees_deposit_then_delete_through_the_menu(rig: MediaRig) -> None:
    watcher = await rig.phone("1001")
    call_id = subscribe(watcher, BOX)
    resp = await watcher.response(call_id, "SUBSCRIBE", final=True)
    assert resp.status == 200 and resp.headers.get("expires") == "600"
    first = await next_notify(watcher, call_id)
    assert parse_summary(first.body).waiting is False
    assert first.headers.get("subscription-state", "").startswith("active")

    caller = await rig.phone()
    await deposit(rig, caller, tone_hz=1000.0, seconds=1.5)
    second = await next_notify(watcher, call_id, after=first)
    summary = parse_summary(second.body)
    assert summary.waiting is True and (summary.new, summary.old) == (1, 0)
    assert summary.account == "sip:1001@demo.sipcore.test"

    owner = await rig.phone("1001")
    dlg, resp = await owner.invite_service(f"mailbox-{BOX}", caller="1001")
    assert resp.status == 200
    await asyncio.sleep(0.5)
    started = owner.loop_time()
    await owner.press("1")  # play messages: "message from ... received ..." then the message
    await asyncio.sleep(9.0)
    heard = owner.heard(since=started)
    assert tone_ratio_anywhere(heard, 1000.0), "the message's 1 kHz tone was not played"
    await owner.press("7")  # delete
    third = await next_notify(watcher, call_id, after=second)
    assert parse_summary(third.body).waiting is False
    assert rig.service.store.messages(BOX) == []
    owner.in_dialog(dlg, "BYE")
    bye_ok = await owner.response(dlg.call_id, "BYE", final=True)
    assert bye_ok.status == 200


def tone_ratio_anywhere(pcm: bytes, freq: float, window: int = 3200) -> bool:
    """Some 200 ms window of ``pcm`` is mostly ``freq``."""
    for i in range(0, max(0, len(pcm) - window), window // 2):
        if tone_ratio(pcm[i : i + window], freq) > 0.7:
            return True
    return False


def subscribe(phone: MediaPhone, box: str, expires: int = 600) -> str:
    call_id = secrets.token_hex(8)
    host, port = phone.server
    uri = f"sip:mailbox-{box}@{host}:{port}"
    phone.send(
        f"SUBSCRIBE {uri} SIP/2.0\nVia: {phone._via('z9hG4bK' + secrets.token_hex(6))}\nMax-Forwards: 70\n"
        f"From: <sip:{phone.user}@demo.sipcore.test>;tag={secrets.token_hex(4)}\nTo: <{uri}>\n"
        f"Call-ID: {call_id}\nCSeq: 1 SUBSCRIBE\nContact: {phone.contact}\nEvent: message-summary\n"
        f"Accept: application/simple-message-summary\nExpires: {expires}\nContent-Length: 0\n\n"
    )
    return call_id


async def next_notify(
    phone: MediaPhone, call_id: str, after: Request | None = None, timeout: float = 8
) -> Request:
    seen = {id(m) for m in phone.received if m is after} if after is not None else set()
    start = phone.received.index(after) + 1 if after is not None else 0

    def pred(m: object) -> bool:
        return (isinstance(m, Request) and m.method == "NOTIFY" and m.call_id == call_id
                and id(m) not in seen and phone.received.index(m) >= start)  # fmt: skip

    msg = await phone.expect(pred, timeout=timeout, what="NOTIFY")
    assert isinstance(msg, Request)
    return msg


async def test_three_party_conference_each_hears_the_others_not_itself(rig: MediaRig) -> None:
    freqs = {"a": 500.0, "b": 1300.0, "c": 2100.0}
    phones = {name: await rig.phone(f"p{name}") for name in freqs}
    for phone in phones.values():
        _, resp = await phone.invite_service("conference-demo", caller="1001")
        assert resp.status == 200
    await asyncio.sleep(1.0)  # join tones and prompts
    start = asyncio.get_running_loop().time() + 0.5
    await asyncio.gather(*(phones[n].tone(f, 2.0) for n, f in freqs.items()))
    for name, phone in phones.items():
        heard = phone.heard(since=start)
        assert len(heard) > 8000, f"{name} heard {len(heard)} bytes"
        own = power(heard, freqs[name])
        for other, f in freqs.items():
            if other != name:
                assert power(heard, f) > 20 * max(own, 1.0), f"{name} should hear {other}"
    room = rig.service.rooms.get("demo")
    assert room is not None and len(room) == 3


async def test_rtp_inactivity_ends_an_abandoned_call(tmp_path: Path) -> None:
    async with media_rig(tmp_path, rtp_timeout=2) as rig:
        phone = await rig.phone()
        dlg, resp = await phone.invite_service(f"voicemail-{BOX}", caller="1002")
        assert resp.status == 200
        bye = await phone.wait_bye(dlg.call_id, timeout=6)  # no RTP ever sent
        assert "RTP timeout" in (bye.headers.get("reason") or "")
        assert rig.service.counters.timeouts == 1
        assert rig.service.store.messages(BOX) == []


async def test_refusals(rig: MediaRig) -> None:
    phone = await rig.phone()
    _, resp = await phone.invite_service("voicemail-demo-1003", caller="1002")
    assert resp.status == 404  # 1003 has no voicemail
    _, resp = await phone.invite_service("nothing-here", caller="1002")
    assert resp.status == 404
    phone.offer = lambda: (  # type: ignore[method-assign]
        f"v=0\no=p 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio {phone.rtp_port} RTP/AVP 9\n"
    )
    _, resp = await phone.invite_service(f"voicemail-{BOX}", caller="1002")
    assert resp.status == 488  # G.722 only: nothing we can speak


async def test_only_the_proxy_may_call(rig: MediaRig) -> None:
    stranger = await rig.phone("x", host="127.0.0.2")
    _, resp = await stranger.invite_service(f"mailbox-{BOX}", caller="1001")
    assert resp.status == 403
    assert rig.service.sessions == {}


async def test_messages_survive_a_restart_of_the_service(tmp_path: Path) -> None:
    async with media_rig(tmp_path) as rig:
        phone = await rig.phone()
        await deposit(rig, phone, seconds=1.0)
        settings = rig.service.settings
    from server.media_app import build_media_service

    again = build_media_service(settings)  # a new process would load the same state_dir
    (msg,) = again.store.messages(BOX)
    assert msg.caller == "1002" and msg.new and 0.9 <= msg.duration <= 1.8
