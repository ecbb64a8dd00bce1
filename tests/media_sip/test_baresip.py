"""The media service with a real softphone, baresip 1.0 (Debian ``baresip-core``), placing its calls
through the proxy like any phone: it leaves a voicemail (its microphone a 1 kHz sine), listens to
its mailbox on 2222 (its ears the ``sndfile`` dump of what it decoded), and subscribes to message
waiting (``mwi`` module). Skipped when the binary is absent. See ``tests/media_sip/baresip.py`` for
the configuration and how baresip is driven (``ctrl_tcp``)."""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import Callable
from pathlib import Path

import pytest

from media.mwi import parse_summary
from media.tones import rms, silence, sine
from media.wav import read_wav, write_wav
from tests.media_sip.baresip import Baresip, baresip, baresip_binary
from tests.media_sip.conftest import Platform, media_platform
from tests.media_sip.phone import MediaPhone, power
from tests.media_sip.test_media_service import tone_ratio

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(baresip_binary() is None, reason="baresip is not installed (apt-get install baresip)"),
]

BOX = "demo-1004"
FRAME = 320  # bytes of 8 kHz 16-bit PCM in 20 ms


async def until(done: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``done()`` every 50 ms for up to ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.05)


def heard(phone: Baresip, side: str = "dec") -> bytes:
    """What baresip decoded (``dec``) or encoded (``enc``) in its only call: the sndfile dump, 8 kHz
    mono 16-bit (PCMU's rate). Complete once the call has ended."""
    dumps = phone.recordings(side)
    assert len(dumps) == 1, dumps
    with wave.open(str(dumps[0])) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        return w.readframes(w.getnframes())


def longest_tone_run(pcm: bytes, freq: float, threshold: float = 0.7) -> float:
    """Seconds of the longest stretch of 100 ms windows that are mostly ``freq``."""
    window = 5 * FRAME
    best = run = 0
    for i in range(0, len(pcm) - window + 1, window):
        run = run + 1 if tone_ratio(pcm[i : i + window], freq) > threshold else 0
        best = max(best, run)
    return best * 0.1


def assert_speech(pcm: bytes) -> None:
    """Speech-like: mostly loud 20 ms frames, their level jumping from syllable to syllable, with
    pauses; no single frequency carrying the energy (not a tone)."""
    levels = [rms(pcm[i : i + FRAME]) for i in range(0, len(pcm) - FRAME + 1, FRAME)]
    assert len(levels) >= 50, f"only {len(levels)} frames heard"
    loud = [v for v in levels if v > 300]  # about -40 dBov
    assert len(loud) > 0.4 * len(levels), f"no prompt heard: {len(loud)}/{len(levels)} loud frames"
    mean = sum(loud) / len(loud)
    spread = (sum((v - mean) ** 2 for v in loud) / len(loud)) ** 0.5
    assert spread > 0.3 * mean, f"a steady level ({spread:.0f} around {mean:.0f}): not speech"
    assert any(v < 0.1 * max(levels) for v in levels), "no pause at all: not speech"
    for freq in (300, 500, 700, 1000, 1500, 2000):
        assert tone_ratio(pcm, freq) < 0.3, f"{freq} Hz carries the energy: a tone, not speech"


async def dial(phone: Baresip, platform: Platform, number: str) -> None:
    resp = await phone.command("dial", f"sip:{number}@127.0.0.1:{platform.port}")
    assert resp["ok"], resp
    await phone.event("CALL_ESTABLISHED", timeout=8)


# ---- 1. a deposit ------------------------------------------------------------------------------------
async def test_baresip_leaves_a_voicemail_when_the_callee_is_busy(tmp_path: Path) -> None:
    async with media_platform(tmp_path / "server") as platform:
        desk = await platform.phone("1004")  # 1004's desk phone: on the phone already
        desk.mode = "busy"
        async with baresip(tmp_path, user="1002", server_port=platform.port, source="ausine,1000") as phone:
            await dial(phone, platform, "1004")
            assert len(desk.requests("INVITE")) == 1  # it was tried, said 486, and voicemail answered
            await asyncio.sleep(0.5)
            resp = await phone.command("sndcode", "#")  # RFC 4733: skip the greeting, the beep at once
            assert resp["ok"], resp
            await asyncio.sleep(4.0)  # ~4 s of 1 kHz after the beep
            await phone.command("hangup")
            await phone.event("CALL_CLOSED", timeout=3)
            store = platform.media.store
            await until(lambda: store.messages(BOX), 5, "the message in demo-1004")
            sent, said = heard(phone, "enc"), heard(phone)
        (msg,) = store.messages(BOX)
        assert msg.caller == "1002" and msg.new
        assert 3.0 <= msg.duration <= 5.0, msg.duration
        pcm, info = read_wav(msg.path)
        assert info.rate == 8000 and abs(info.duration - msg.duration) < 0.05
        middle = pcm[len(pcm) // 2 - 8000 : len(pcm) // 2 + 8000]  # one second in the middle
        assert power(middle, 1000) > 50 * power(middle, 1500)  # baresip's sine, not noise
        assert tone_ratio(middle, 1000) > 0.8
        assert longest_tone_run(pcm, 1000) >= msg.duration - 0.5  # the tone all along
        assert longest_tone_run(sent, 1000) >= 4.0, "baresip's encoder did not get ausine's 1 kHz"
        # baresip heard the beep (1 kHz, 400 ms) that the '#' brought at once, then nothing
        assert 0.2 <= longest_tone_run(said, 1000) <= 0.6


# ---- 2. the mailbox menu -----------------------------------------------------------------------------
def deposit_tone(platform: Platform, tmp_path: Path, seconds: float = 3.0) -> None:
    """A message from 1002 an hour ago: 300 ms of silence, ``seconds`` of 1 kHz, 300 ms of silence."""
    path = tmp_path / "message.wav"
    write_wav(path, silence(300) + sine(1000, int(seconds * 1000), -12.0) + silence(300))
    platform.media.store.deposit(BOX, path, "1002", time.time() - 3600, seconds + 0.6)


def silence_wav(tmp_path: Path, seconds: int = 40) -> Path:
    """A quiet microphone for baresip (``aufile``: 8 kHz mono, long enough for the call)."""
    path = tmp_path / "quiet.wav"
    write_wav(path, silence(seconds * 1000))
    return path


async def test_baresip_hears_the_menu_and_its_message_on_2222(tmp_path: Path) -> None:
    async with media_platform(tmp_path / "server") as platform:
        deposit_tone(platform, tmp_path)
        quiet = silence_wav(tmp_path)
        async with baresip(tmp_path, user="1004", server_port=platform.port, source=f"aufile,{quiet}",
                           source_rate=8000, source_channels=1) as phone:  # fmt: skip
            await dial(phone, platform, "2222")
            loop = asyncio.get_running_loop()
            answered = loop.time()
            await asyncio.sleep(3.0)  # "you have one new message", then the main menu
            pressed = loop.time() - answered
            resp = await phone.command("sndcode", "1")  # listen: envelope, then the message
            assert resp["ok"], resp
            store = platform.media.store
            # the message played to its end is marked heard (envelope ~5 s, message 3.6 s)
            await until(lambda: not store.messages(BOX)[0].new, 14, "the message marked heard")
            await asyncio.sleep(0.3)
            await phone.command("hangup")
            await phone.event("CALL_CLOSED", timeout=3)
            said = heard(phone)
    cut = int(pressed * 8000) * 2
    before, after = said[:cut], said[cut:]
    assert_speech(before)  # "you have one new message...", the main menu
    assert longest_tone_run(before, 1000) < 0.3, "a tone before '1' was pressed"
    assert longest_tone_run(after, 1000) >= 2.5, "the message's 3 s of 1 kHz were not heard"
    assert len(store.messages(BOX)) == 1 and store.messages(BOX)[0].heard_at is not None


# ---- 3. message waiting ------------------------------------------------------------------------------
async def test_baresip_mwi_subscribes_and_sees_the_count(tmp_path: Path) -> None:
    """baresip (1004, ``mwi`` module) subscribes once registered; 1002 calls it, baresip rejects the
    call (486), 1002 leaves a message in 1004's voicemail, and baresip's NOTIFY says 1 new."""
    async with media_platform(tmp_path / "server") as platform:
        media = platform.media
        async with baresip(tmp_path, user="1004", server_port=platform.port, mwi=True) as phone:
            await until(lambda: any(s.box == BOX for s in media.subscriptions.values()), 8,
                        f"a message-summary subscription for {BOX} at the media service")  # fmt: skip
            await until(lambda: phone.mwi_bodies(), 5, "the first NOTIFY")
            first = parse_summary(phone.mwi_bodies()[0])
            assert first.waiting is False and (first.new, first.old) == (0, 0)
            assert first.account == "sip:1004@demo.sipcore.test"

            caller = await platform.phone("1002")
            dlg = await caller.call("1004")
            await phone.event("CALL_INCOMING", timeout=5)
            assert (await phone.command("hangup"))["ok"]  # baresip: 486 Rejected -> 1004's voicemail
            answer = await caller.response(dlg.call_id, final=True, timeout=8)
            assert answer.status == 200, answer.start_line()
            caller.ack(dlg, answer)
            caller.start_media(answer)
            await leave_message(caller, dlg.call_id)
            (msg,) = media.store.messages(BOX)
            assert msg.caller == "1002" and msg.new

            await until(lambda: len(phone.mwi_bodies()) >= 2, 5, "the NOTIFY after the deposit")
            last = parse_summary(phone.mwi_bodies()[-1])
            assert last.waiting is True and (last.new, last.old) == (1, 0)
            events = [
                parse_summary(e.get("param", "")) for e in phone.events if e.get("type") == "MWI_NOTIFY"
            ]
            assert events and events[-1] == last  # ctrl_tcp reported it as an MWI_NOTIFY event too
        subs = [s for s in media.subscriptions.values() if s.box == BOX]
        assert subs == [], "baresip's unsubscribe (Expires: 0) on quitting did not end the subscription"


async def leave_message(caller: MediaPhone, call_id: str, seconds: float = 1.5) -> None:
    """Skip the greeting, speak ``seconds`` of 1 kHz after the beep, end with '#' (the service hangs up)."""
    await asyncio.sleep(0.3)
    await caller.press("#")
    await caller.silence(0.6)
    await caller.tone(1000.0, seconds)
    await caller.press("#")
    await caller.wait_bye(call_id, timeout=8)
