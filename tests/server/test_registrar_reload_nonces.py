"""A reload keeps the registrar's challenger while realm, nonce secret and algorithms stay the same,
so the nonces phones already hold stay valid (`server.registrar_service.build_registrar`)."""

from __future__ import annotations

from pathlib import Path

from config.loader import default_config_path, load_config_text
from config.model import Config
from server.registrar_service import build_registrar
from server.sip_server import ServerSettings, SipServer


def _sip() -> SipServer:
    """A SIP server never started: build_registrar only asks it which hosts are ours."""
    return SipServer(ServerSettings(udp=[], tcp=[], metrics_address=None))


def _config(secret: str | None = "change-me-demo-nonce-secret", realm: str = "demo.sipcore.test") -> Config:
    """The example configuration with another nonce secret (None: none, so drawn at random) or realm."""
    text = default_config_path().read_text()
    line = "  nonce_secret: change-me-demo-nonce-secret"
    text = text.replace(line, f"  nonce_secret: {secret}" if secret else "", 1)
    text = text.replace("  realm: demo.sipcore.test", f"  realm: {realm}", 1)
    return load_config_text(text, Path(default_config_path()).parent)


def test_a_reload_keeps_the_challenger_and_its_nonces_while_nothing_it_needs_changed() -> None:
    sip = _sip()
    first = build_registrar(_config(), sip)
    nonce = first.challenger.make_nonce(1_000.0)
    again = build_registrar(_config(), sip, previous=first)
    assert again is not first and again.challenger is first.challenger
    assert again.challenger.nonce_issued_at(nonce) is not None
    other_secret = build_registrar(_config("another-secret-0123456789"), sip, previous=again)
    assert other_secret.challenger is not again.challenger
    assert other_secret.challenger.nonce_issued_at(nonce) is None
    other_realm = build_registrar(
        _config("another-secret-0123456789", "other.test"), sip, previous=other_secret
    )
    assert other_realm.challenger is not other_secret.challenger


def test_a_random_secret_is_kept_across_a_reload() -> None:
    sip = _sip()
    first = build_registrar(_config(secret=None), sip)
    assert first.nonce_secret is None
    nonce = first.challenger.make_nonce(1_000.0)
    again = build_registrar(_config(secret=None), sip, previous=first)
    assert again.challenger is first.challenger and again.challenger.nonce_issued_at(nonce) is not None
