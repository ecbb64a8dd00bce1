"""Media: the pieces of the voicemail/conference media service (floor 2, beside ``calls/``).

Sans-IO like the rest of the house: SDP offer/answer (``sdp``), RTP packets, the receive-side stream
state and the send-side packetiser (``rtp``), RFC 4733 telephone-events and SIP INFO DTMF (``dtmf``).
No clock, socket or asyncio here: ``now`` is an argument, the UDP endpoints live in the adapter.
See docs/media.md.
"""
