"""Addressing for TLS and WebSocket: where a sips:/transport= URI goes, our Via and Record-Route per
transport, and the flow's transport across workers and in flow tokens."""

from __future__ import annotations

from calls.subscriptions import FlowTokens, record_route_with
from server.worker_channel import DELIVER, decode_frame, encode_message
from sipcore.flow import Flow, stamp_via
from sipcore.headers import Via
from sipcore.proxy import Hop
from sipcore.uri import parse_uri


def test_sips_and_transport_parameters_pick_transport_and_port() -> None:
    cases = {
        "sips:alice@example.net": ("tls", 5061),
        "sips:alice@example.net:5071": ("tls", 5071),
        "sip:alice@example.net": ("udp", 5060),
        "sip:alice@example.net;transport=TLS": ("tls", 5060),
        "sip:abc@df7jal23ls0d.invalid;transport=ws": ("ws", 5060),
    }
    for text, expected in cases.items():
        uri = parse_uri(text)
        assert (uri.target_transport, uri.target_port) == expected, text


def test_hops_say_their_transport_in_via_and_record_route() -> None:
    assert Hop("UDP", "192.0.2.1", 5060).record_route() == "<sip:192.0.2.1:5060;lr>"
    assert Hop("TLS", "192.0.2.1", 5061).record_route() == "<sip:192.0.2.1:5061;transport=tls;lr>"
    assert Hop("WSS", "192.0.2.1", 8443).via("z9hG4bKx").startswith("SIP/2.0/WSS 192.0.2.1:8443;")
    assert record_route_with(Hop("WS", "h", 80), "tok") == "<sip:tok@h:80;transport=ws;lr>"


def test_flow_transports_cross_the_worker_channel_and_flow_tokens() -> None:
    tokens = FlowTokens(b"k" * 32)
    for transport in ("udp", "tcp", "tls", "ws", "wss"):
        flow = Flow(
            transport, ("198.51.100.7", 40000), ("192.0.2.1", 5061), None if transport == "udp" else "w1-7"
        )
        assert decode_frame(encode_message(DELIVER, b"x", flow)) == (DELIVER, flow, b"x")
        assert tokens.open(tokens.seal(flow, "tag"), "tag") == flow


def test_websocket_vias_get_rport_even_unasked() -> None:
    via = Via.parse("SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKx")
    stamped = stamp_via(via, ("198.51.100.7", 40123), always_rport=True)
    assert (stamped.param("received"), stamped.param("rport")) == ("198.51.100.7", "40123")
    assert stamp_via(via, ("198.51.100.7", 40123)).param("rport") is None  # UDP/TCP: as before
