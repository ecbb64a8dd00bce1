"""The SDP reader (media/sdp.py) as the media service drives it: parse (SdpParseError only), answer
the offer (SdpError only), and what it parsed serialises to SDP that parses to the same thing."""

from __future__ import annotations

from collections.abc import Iterable

from media import sdp

from .seeds import sdp_bodies


def seeds() -> Iterable[bytes]:
    return sdp_bodies()


OURS = sdp.build_offer(address="192.0.2.1", port=40000, session_id=7)


def check(data: bytes) -> None:
    try:
        theirs = sdp.parse(data)
    except sdp.SdpParseError:
        return
    assert sdp.parse(theirs.to_bytes()) == theirs, (data, theirs.to_bytes())
    try:  # their answer to our offer (a call we place)
        sdp.accept_answer(OURS, theirs)
    except sdp.SdpError:
        pass
    try:  # our answer to their offer (a call we take)
        answer = sdp.answer_offer(theirs, address="192.0.2.1", port=40000, session_id=7)
    except sdp.SdpError:
        return
    assert sdp.parse(answer.sdp.to_bytes()) == answer.sdp, (data, answer.sdp.to_bytes())
    sdp.accept_answer(theirs, answer.sdp)  # our answer satisfies the offer it answers
