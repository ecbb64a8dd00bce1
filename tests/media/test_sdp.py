"""SDP parsing, serialising and offer/answer (media/sdp.py) on real phones' offers."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media import sdp
from media.sdp import PCMA, PCMU, Direction, SdpError, SdpNotAcceptable, SdpParseError

# Realistic offers, as the phones and tools the service meets write them (addresses changed).

BARESIP = (
    "v=0\r\n"
    "o=- 1916523447 2817412683 IN IP4 192.168.1.23\r\n"
    "s=-\r\n"
    "c=IN IP4 192.168.1.23\r\n"
    "t=0 0\r\n"
    "m=audio 10350 RTP/AVP 9 0 8 101\r\n"
    "b=AS:64\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=rtcp-rsize\r\n"
    "a=sendrecv\r\n"
    "a=label:1\r\n"
    "a=ssrc:2733297811 cname:2b7c9a3f-4c2e-4a77-a0d1-12c9e0b4f7aa\r\n"
    "a=mid:1\r\n"
    "a=ptime:20\r\n"
)

YEALINK = (
    "v=0\r\n"
    "o=- 20045 20045 IN IP4 10.0.0.45\r\n"
    "s=SDP data\r\n"
    "c=IN IP4 10.0.0.45\r\n"
    "t=0 0\r\n"
    "m=audio 11796 RTP/AVP 8 0 18 9 101\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:18 G729/8000\r\n"
    "a=fmtp:18 annexb=no\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)

# SIPp's uac_pcap scenario, with LF line ends as its XML scenario files produce.
SIPP = (
    "v=0\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1\n"
    "s=-\n"
    "c=IN IP4 127.0.0.1\n"
    "t=0 0\n"
    "m=audio 6000 RTP/AVP 8 101\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-11,16\n"
)

# Linphone: Opus first, SRTP-free, an ICE-less video stream, media-level c=, rtcp-fb noise.
LINPHONE = (
    "v=0\r\n"
    "o=1001 2891 1290 IN IP4 192.168.1.50\r\n"
    "s=Talk\r\n"
    "t=0 0\r\n"
    "a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n"
    "a=record:off\r\n"
    "m=audio 7078 RTP/AVP 96 97 98 0 8 101 99 100\r\n"
    "c=IN IP4 192.168.1.50\r\n"
    "a=rtpmap:96 opus/48000/2\r\n"
    "a=fmtp:96 useinbandfec=1\r\n"
    "a=rtpmap:97 speex/16000\r\n"
    "a=fmtp:97 vbr=on\r\n"
    "a=rtpmap:98 speex/8000\r\n"
    "a=fmtp:98 vbr=on\r\n"
    "a=rtpmap:101 telephone-event/48000\r\n"
    "a=rtpmap:99 telephone-event/16000\r\n"
    "a=rtpmap:100 telephone-event/8000\r\n"
    "a=rtcp-fb:* trr-int 1000\r\n"
    "a=rtcp-fb:* ccm tmmbr\r\n"
    "m=video 9078 RTP/AVP 96\r\n"
    "c=IN IP4 192.168.1.50\r\n"
    "a=rtpmap:96 VP8/90000\r\n"
    "a=rtcp-fb:* trr-int 1000\r\n"
    "a=rtcp-fb:96 nack pli\r\n"
)

# A phone putting the call on hold (re-INVITE), the RFC 3264 way.
HOLD = (
    "v=0\r\n"
    "o=- 20045 20046 IN IP4 10.0.0.45\r\n"
    "s=SDP data\r\n"
    "c=IN IP4 10.0.0.45\r\n"
    "t=0 0\r\n"
    "m=audio 11796 RTP/AVP 8 101\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=sendonly\r\n"
)

ALL = {"baresip": BARESIP, "yealink": YEALINK, "sipp": SIPP, "linphone": LINPHONE, "hold": HOLD}

US = {"address": "203.0.113.5", "port": 40000, "session_id": 77}


def _answer(text: str, **kw: object) -> sdp.Answer:
    return sdp.answer_offer(sdp.parse(text), **{**US, **kw})  # type: ignore[arg-type]


# --- parsing -------------------------------------------------------------------------------------


def test_parse_baresip_fields() -> None:
    d = sdp.parse(BARESIP.encode())
    assert d.origin == sdp.Origin("-", 1916523447, 2817412683, "192.168.1.23")
    assert d.connection == sdp.Connection("192.168.1.23")
    (m,) = d.media
    assert (m.media, m.port, m.proto, m.formats) == ("audio", 10350, "RTP/AVP", ("9", "0", "8", "101"))
    assert m.rtpmap(101) == sdp.RtpMap(101, "telephone-event", 8000)
    assert m.fmtp("101") == "0-15"
    assert m.ptime == 20
    assert m.direction is Direction.SENDRECV
    assert m.bandwidths == ("AS:64",)
    assert m.attribute("rtcp-rsize") == ""
    assert m.attribute("mid") == "1"
    assert m.attribute("nothere") is None


def test_parse_lf_only_and_static_types_without_rtpmap() -> None:
    text = "v=0\no=- 1 1 IN IP4 10.1.1.1\ns=-\nc=IN IP4 10.1.1.1\nt=0 0\nm=audio 5004 RTP/AVP 0 8\n\n"
    (m,) = sdp.parse(text).media
    assert m.rtpmaps == ()
    assert m.rtpmap(0) == sdp.RtpMap(0, "PCMU", 8000, 1)
    assert m.rtpmap(8) == sdp.RtpMap(8, "PCMA", 8000, 1)
    assert m.rtpmap(96) is None


def test_parse_media_level_connection_overrides_session() -> None:
    text = (
        "v=0\r\no=- 1 1 IN IP4 10.1.1.1\r\ns=-\r\nc=IN IP4 10.1.1.1\r\nt=0 0\r\n"
        "m=audio 5004 RTP/AVP 0\r\nc=IN IP4 10.2.2.2\r\nm=audio 5006 RTP/AVP 0\r\n"
    )
    d = sdp.parse(text)
    assert d.connection_for(d.media[0]) == sdp.Connection("10.2.2.2")
    assert d.connection_for(d.media[1]) == sdp.Connection("10.1.1.1")


def test_parse_session_direction_is_default_for_media() -> None:
    text = "v=0\r\no=- 1 1 IN IP4 h.example\r\ns=-\r\nc=IN IP4 h.example\r\nt=0 0\r\na=sendonly\r\nm=audio 5004 RTP/AVP 0\r\n"
    d = sdp.parse(text)
    assert d.direction_for(d.media[0]) is Direction.SENDONLY
    assert _answer(text).audio.direction is Direction.RECVONLY


def test_parse_ipv6_and_multicast_ttl() -> None:
    text = "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\n"
    assert sdp.parse(text).connection == sdp.Connection("2001:db8::1", "IP6")
    text4 = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 224.2.1.1/127\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\n"
    c = sdp.parse(text4).connection
    assert c is not None and c.host == "224.2.1.1" and c.address == "224.2.1.1/127"


def test_fractional_ptime_and_unknown_lines_tolerated() -> None:
    text = (
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\ni=info\r\nu=http://x\r\ne=a@b\r\np=+1\r\n"
        "c=IN IP4 10.0.0.1\r\nt=0 0\r\nr=7d 1h 0 25h\r\nz=0 0\r\nx=custom\r\n"
        "m=audio 5004 RTP/AVP 0\r\ni=audio\r\na=ptime:20.0\r\n"
    )
    assert sdp.parse(text).media[0].ptime == 20


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "v=0"),
        ("v=1\r\n", "v=0"),
        ("o=- 1 1 IN IP4 1.1.1.1\r\nv=0\r\n", "v=0"),
        ("v=0\r\ns=-\r\n", "no o="),
        ("v=0\r\no=- 1 IN IP4 1.1.1.1\r\n", "o= needs"),
        ("v=0\r\no=- x 1 IN IP4 1.1.1.1\r\n", "not a number"),
        ("v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP4 300.1.1.1\r\n", "IPv4"),
        ("v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP5 1.1.1.1\r\n", "address type"),
        ("v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=ATM IP4 1.1.1.1\r\n", "network type"),
        ("v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nm=audio 5004 RTP/AVP 0\r\n", "no address"),
        ("v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP4 1.1.1.1\r\nm=audio 70000 RTP/AVP 0\r\n", "port"),
        ("v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP4 1.1.1.1\r\nm=audio 5004 RTP/AVP\r\n", "format"),
        ("v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP4 1.1.1.1\r\nm=audio 5004 RTP/AVP 128\r\n", "payload type"),
        (
            "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP4 1.1.1.1\r\nm=audio 5 RTP/AVP 0\r\na=rtpmap:0\r\n",
            "rtpmap",
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP4 1.1.1.1\r\nm=audio 5 RTP/AVP 0\r\na=rtpmap:0 PCMU/0\r\n",
            "clock",
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP4 1.1.1.1\r\nm=audio 5 RTP/AVP 0\r\na=ptime:x\r\n",
            "ptime",
        ),
        ("v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nbroken line\r\n", "<type>=<value>"),
        ("v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\no=- 1 1 IN IP4 1.1.1.1\r\n", "two o="),
        (
            "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\nc=IN IP4 1.1.1.1\r\nm=audio 5 RTP/AVP 0\r\ns=-\r\n",
            "inside a media",
        ),
        ("v=0\r\no=- \u0661 1 IN IP4 1.1.1.1\r\n", "not a number"),  # Arabic-Indic digit: int() takes it
    ],
)
def test_malformed_raises_parse_error(text: str, message: str) -> None:
    with pytest.raises(SdpParseError, match=message) as info:
        sdp.parse(text)
    assert info.value.status == 400


def test_non_utf8_is_a_parse_error() -> None:
    with pytest.raises(SdpParseError, match="UTF-8"):
        sdp.parse(b"v=0\r\no=\xff\r\n")


@pytest.mark.parametrize("name", sorted(ALL))
def test_serialise_round_trip(name: str) -> None:
    d = sdp.parse(ALL[name])
    assert sdp.parse(d.to_bytes()) == d


# --- answer --------------------------------------------------------------------------------------


def test_answer_picks_offerers_first_supported_codec_and_keeps_dtmf_type() -> None:
    a = _answer(BARESIP)  # offers G722 first: not ours; PCMU next
    assert a.audio.codec == PCMU and a.audio.payload_type == 0
    assert a.audio.dtmf_payload_type == 101
    assert a.audio.remote == ("192.168.1.23", 10350)
    (m,) = a.sdp.media
    assert m.formats == ("0", "101")
    assert m.port == 40000 and m.proto == "RTP/AVP"
    assert m.fmtp("101") == "0-16"
    assert a.sdp.connection == sdp.Connection("203.0.113.5")
    assert a.sdp.origin.session_id == 77


def test_answer_yealink_prefers_pcma() -> None:
    assert _answer(YEALINK).audio.codec == PCMA


def test_answer_respects_our_supported_list() -> None:
    assert _answer(YEALINK, supported=(PCMU,)).audio.codec == PCMU


def test_answer_sipp_lf_offer() -> None:
    a = _answer(SIPP)
    assert (a.audio.codec, a.audio.dtmf_payload_type, a.audio.remote_ptime) == (PCMA, 101, None)


def test_answer_linphone_rejects_video_and_picks_8k_telephone_event() -> None:
    a = _answer(LINPHONE)
    assert a.audio.codec == PCMU
    assert a.audio.dtmf_payload_type == 100  # the 8000 Hz one, not 101 (48 kHz) or 99 (16 kHz)
    audio, video = a.sdp.media
    assert audio.port == 40000
    assert (video.media, video.port, video.proto, video.formats) == ("video", 0, "RTP/AVP", ("96",))


def test_answer_dynamic_payload_type_for_pcmu_is_kept() -> None:
    text = (
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
        "m=audio 5004 RTP/AVP 96 97\r\na=rtpmap:96 pcmu/8000/1\r\na=rtpmap:97 telephone-event/8000\r\n"
    )
    a = _answer(text)
    assert (a.audio.codec, a.audio.payload_type, a.audio.dtmf_payload_type) == (PCMU, 96, 97)
    assert a.sdp.media[0].rtpmap(96) == sdp.RtpMap(96, "PCMU", 8000)


def test_answer_without_telephone_event() -> None:
    text = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 5004 RTP/AVP 8\r\n"
    a = _answer(text)
    assert a.audio.dtmf_payload_type is None
    assert a.sdp.media[0].formats == ("8",)
    assert a.sdp.media[0].fmtps == ()


@pytest.mark.parametrize(
    ("offered", "answered"),
    [("sendrecv", "sendrecv"), ("sendonly", "recvonly"), ("recvonly", "sendonly"), ("inactive", "inactive")],
)
def test_answer_mirrors_direction(offered: str, answered: str) -> None:
    a = _answer(HOLD.replace("a=sendonly", f"a={offered}"))
    assert a.audio.direction is Direction(answered)
    assert a.sdp.media[0].direction is Direction(answered)


def test_hold_with_zero_address_means_do_not_send() -> None:
    a = _answer(YEALINK.replace("c=IN IP4 10.0.0.45", "c=IN IP4 0.0.0.0"))
    assert a.audio.direction is Direction.SENDRECV
    assert not a.audio.may_send
    assert _answer(YEALINK).audio.may_send


def test_second_audio_stream_and_srtp_are_rejected() -> None:
    text = (
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
        "m=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abc\r\n"
        "m=audio 5002 RTP/AVP 0\r\nm=audio 5004 RTP/AVP 8\r\n"
    )
    a = _answer(text)
    assert [m.port for m in a.sdp.media] == [0, 40000, 0]
    assert a.audio.media_index == 1 and a.audio.remote_port == 5002


@pytest.mark.parametrize(
    ("media", "why"),
    [
        ("m=audio 5004 RTP/AVP 9 18\r\n", "no codec in common"),
        ("m=video 5004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n", "no audio stream"),
        ("m=audio 0 RTP/AVP 0\r\n", "no audio stream"),
        ("m=audio 5004 RTP/SAVP 0\r\n", "profile RTP/SAVP"),
        ("m=audio 5004 RTP/AVP 96\r\na=rtpmap:96 PCMU/16000\r\n", "no codec in common"),
        ("", "no audio stream"),
    ],
)
def test_unusable_offer_is_488(media: str, why: str) -> None:
    text = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n" + media
    with pytest.raises(SdpNotAcceptable, match=why) as info:
        _answer(text)
    assert (info.value.status, info.value.reason) == (488, "Not Acceptable Here")


def test_answer_with_ipv6_address() -> None:
    a = _answer(BARESIP, address="2001:db8::5")
    assert a.sdp.connection == sdp.Connection("2001:db8::5", "IP6")
    assert sdp.parse(a.sdp.to_bytes()) == a.sdp


# --- offer -----------------------------------------------------------------------------------------


def test_build_offer_and_accept_answer_paired() -> None:
    offer = sdp.build_offer(address="203.0.113.5", port=40000, session_id=9)
    text = offer.to_bytes().decode()
    assert "m=audio 40000 RTP/AVP 0 8 101\r\n" in text
    assert "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n" in text
    # The phone answers our offer with our own answerer: the two sides agree.
    phone = sdp.answer_offer(sdp.parse(text), address="10.0.0.9", port=6000, session_id=1, supported=(PCMA,))
    got = sdp.accept_answer(offer, sdp.parse(phone.sdp.to_bytes()))
    assert (got.codec, got.payload_type, got.dtmf_payload_type) == (PCMA, 8, 101)
    assert got.remote == ("10.0.0.9", 6000)
    assert got.direction is Direction.SENDRECV


def test_accept_answer_directions_and_refusals() -> None:
    offer = sdp.build_offer(address="203.0.113.5", port=40000, session_id=9)
    base = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"
    got = sdp.accept_answer(offer, sdp.parse(base + "m=audio 6000 RTP/AVP 0\r\na=recvonly\r\n"))
    assert got.direction is Direction.SENDONLY and got.dtmf_payload_type is None
    with pytest.raises(SdpNotAcceptable):
        sdp.accept_answer(offer, sdp.parse(base + "m=audio 0 RTP/AVP 0\r\n"))
    with pytest.raises(SdpParseError, match="did not offer"):
        sdp.accept_answer(offer, sdp.parse(base + "m=audio 6000 RTP/AVP 9\r\n"))
    with pytest.raises(SdpParseError, match="m= lines"):
        sdp.accept_answer(offer, sdp.parse(base))


def test_accept_answer_refuses_a_changed_profile() -> None:
    """Regression (fuzz/target_sdp.py, issue 20): an answer whose audio stream left RTP had token
    formats ("$8") read as payload types, and ValueError escaped instead of SdpParseError."""
    offer = sdp.build_offer(address="203.0.113.5", port=40000, session_id=9)
    base = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"
    for media in ("m=audio 6000 AVP $8 101\r\n", "m=audio 6000 RTP/SAVP 0\r\n"):
        with pytest.raises(SdpParseError, match="profile"):
            sdp.accept_answer(offer, sdp.parse(base + media))


def test_next_version_bumps_origin() -> None:
    offer = sdp.build_offer(address="203.0.113.5", port=40000, session_id=9, session_version=4)
    assert sdp.next_version(offer).origin.session_version == 5


# --- fuzz ------------------------------------------------------------------------------------------

_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "replace", "dup_line", "drop_line", "swap_lines"]),
        st.integers(min_value=0, max_value=10_000),
        st.integers(min_value=0, max_value=10_000),
        st.sampled_from(list("=: /\r\n0123456789aczmvoIP4\x00\xff-")) | st.characters(),
    ),
    min_size=1,
    max_size=6,
)


def _mutate(text: str, edits: list[tuple[str, int, int, str]]) -> str:
    for op, i, j, ch in edits:
        lines = text.split("\n")
        if op == "insert":
            k = i % (len(text) + 1)
            text = text[:k] + ch + text[k:]
        elif op == "delete" and text:
            k = i % len(text)
            text = text[:k] + text[k + 1 + j % 4 :]
        elif op == "replace" and text:
            k = i % len(text)
            text = text[:k] + ch + text[k + 1 :]
        elif op == "dup_line":
            k = i % len(lines)
            text = "\n".join([*lines[: k + 1], lines[k], *lines[k + 1 :]])
        elif op == "drop_line":
            k = i % len(lines)
            text = "\n".join(lines[:k] + lines[k + 1 :])
        elif op == "swap_lines":
            a, b = i % len(lines), j % len(lines)
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(name=st.sampled_from(sorted(ALL)), edits=_EDITS, as_bytes=st.booleans())
def test_fuzz_mutated_offers_raise_only_sdp_error(name: str, edits: list, as_bytes: bool) -> None:
    text = _mutate(ALL[name], edits)
    body: bytes | str = text.encode("utf-8", "surrogatepass") if as_bytes else text
    try:
        d = sdp.parse(body)
    except SdpError:
        return
    assert sdp.parse(d.to_bytes()) == d  # what we accept, we write back readably
    try:
        a = sdp.answer_offer(d, **US)  # type: ignore[arg-type]
    except SdpNotAcceptable:
        return
    assert len(a.sdp.media) == len(d.media)
    assert sdp.parse(a.sdp.to_bytes()) == a.sdp
