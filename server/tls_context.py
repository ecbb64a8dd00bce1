"""TLS contexts for SIP over TLS and WSS: the server's (certificate and key, reloadable in place) and
the clients' towards trunks (CA verification or a pinned certificate fingerprint, SNI).

Why here and not in sipcore: files, the ``openssl`` command and the configuration are the server's
business; sipcore/transport_secure.py only takes a ready ``ssl.SSLContext``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from sipcore.transport_secure import SecureSettings

log = structlog.get_logger("sipcore.tls")

# Forward-secret AEAD suites only for TLS 1.2 (TLS 1.3 suites are all fine and set apart by OpenSSL).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!MD5:!DSS"
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsConfigError(ValueError):
    """A certificate, key or CA file that cannot be used; its text names the file."""


@dataclass(frozen=True, slots=True)
class ServerTls:
    """What the server's TLS context is built from (config/schema.py ``server.tls``)."""

    cert_file: Path
    key_file: Path
    min_version: str = "1.2"
    ciphers: str = CIPHERS
    client_ca_file: Path | None = None  # with it, clients must present a certificate it signed
    self_signed: bool = False  # create a demo pair when both files are missing


def server_context(cfg: ServerTls) -> ssl.SSLContext:
    """A server-side context: TLS ``min_version``+, the configured ciphers, the certificate loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[cfg.min_version]
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    try:
        ctx.set_ciphers(cfg.ciphers)
    except ssl.SSLError as exc:
        raise TlsConfigError(f"server.tls.ciphers {cfg.ciphers!r}: {exc.reason or exc}") from None
    if cfg.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(cfg.client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"{cfg.client_ca_file}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    load_certificate(ctx, cfg)
    return ctx


def load_certificate(ctx: ssl.SSLContext, cfg: ServerTls) -> None:
    """(Re)load the certificate chain and key into ``ctx``: connections accepted from now on use the
    new pair, open ones keep theirs (what ``sipcore reload`` does after a certificate renewal)."""
    if cfg.self_signed:
        ensure_self_signed(cfg.cert_file, cfg.key_file)
    for path in (cfg.cert_file, cfg.key_file):
        if not path.is_file():
            raise TlsConfigError(f"{path}: no such file")
    try:
        ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"{cfg.cert_file} / {cfg.key_file}: {exc}") from None


def ensure_self_signed(cert_file: Path, key_file: Path, host: str = "localhost") -> bool:
    """Create a self-signed pair (EC P-256, 10 years, SAN localhost/127.0.0.1/::1) with the
    ``openssl`` command when neither file exists: the demo's certificate (``make run``). True when
    created. A pair half there is left alone (the load then names the missing file)."""
    if cert_file.exists() or key_file.exists():
        return False
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TlsConfigError(f"{cert_file}: missing, and no openssl command to create a demo pair")
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-days", "3650", "-subj", f"/CN={host}", "-keyout", str(key_file), "-out", str(cert_file),
           "-addext", f"subjectAltName=DNS:{host},IP:127.0.0.1,IP:::1"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TlsConfigError(f"openssl could not create {cert_file}: {done.stderr.strip()[-200:]}")
    key_file.chmod(0o600)
    log.warning("tls_self_signed_created", cert_file=str(cert_file), key_file=str(key_file))
    return True


@dataclass(frozen=True, slots=True)
class PeerTls:
    """How we open TLS towards one trunk: the context (CA-verified, or not verified when a
    fingerprint is pinned instead), the SNI name, and the pinned SHA-256 of its certificate."""

    context: ssl.SSLContext
    server_name: str | None
    fingerprint: bytes | None = None

    def accepts(self, der: bytes | None) -> bool:
        """The peer's certificate (DER) against the pin; True without a pin (the context verified it)."""
        if self.fingerprint is None:
            return True
        return der is not None and hmac.compare_digest(hashlib.sha256(der).digest(), self.fingerprint)


def parse_fingerprint(text: str) -> bytes:
    """'AB:CD:…' or 'abcd…' (SHA-256, 32 bytes) -> bytes; ValueError otherwise."""
    raw = bytes.fromhex(text.replace(":", "").strip())
    if len(raw) != 32:
        raise ValueError("a SHA-256 fingerprint is 32 bytes (64 hex digits)")
    return raw


def peer_tls(server_name: str | None, ca_file: Path | None = None, fingerprint: str | None = None,
             verify: bool = True) -> PeerTls:  # fmt: skip
    """A client context towards a trunk. With ``fingerprint`` the chain is not verified (a
    self-signed carrier certificate) but the certificate must match the pin; otherwise it is verified
    against ``ca_file`` (else the system CAs) with the host name checked against ``server_name``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    pin = parse_fingerprint(fingerprint) if fingerprint else None
    if pin is not None or not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"{ca_file}: {exc}") from None
    else:
        ctx.load_default_certs()
    return PeerTls(ctx, server_name, pin)


def certificate_fingerprint(cert_file: Path) -> str:
    """SHA-256 of a PEM certificate as 'AB:CD:…' (what a trunk's ``tls.fingerprint`` pins)."""
    der = ssl.PEM_cert_to_DER_cert(cert_file.read_text())
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def server_tls_of(srv: Any) -> ServerTls | None:
    """``server.tls`` of the configuration as ServerTls, relative files under ``state_dir``."""
    t = srv.tls
    if t is None:
        return None
    state = Path(os.path.expanduser(str(srv.state_dir)))

    def under(rel: str) -> Path:
        p = Path(os.path.expanduser(rel))
        return p if p.is_absolute() else state / p

    return ServerTls(
        cert_file=under(t.cert_file),
        key_file=under(t.key_file),
        min_version=t.min_version,
        ciphers=t.ciphers or CIPHERS,
        client_ca_file=under(t.client_ca_file) if t.client_ca_file else None,
        self_signed=t.self_signed,
    )


def secure_settings(srv: Any, path: str | None = None) -> SecureSettings:
    """The SIP floor's TLS / WS / WSS settings from ``server``; a certificate that cannot be loaded is
    a configuration error naming the file (``sipcore serve`` and ``check-config`` print it)."""
    from config.loader import ConfigError
    from config.yaml_marks import Problem

    tls = server_tls_of(srv)
    wsc = srv.websocket
    context = None
    if tls is not None:
        try:
            context = server_context(tls)
        except TlsConfigError as exc:
            raise ConfigError([Problem(path or "<config>", 0, 0, f"server.tls: {exc}")]) from None
    return SecureSettings(
        tls=[str(a) for a in srv.tls.listen] if srv.tls is not None else [],
        ws=[str(a) for a in wsc.listen] if wsc is not None else [],
        wss=[str(a) for a in wsc.tls_listen] if wsc is not None else [],
        context=context,
        handshake_timeout=float(srv.tls.handshake_timeout) if srv.tls is not None else 10.0,
    )


def tls_peers_of(cfg: Any) -> dict[tuple[str, int], PeerTls]:
    """(host, port) of each TLS trunk -> how we open TLS to it; relative CA files under state_dir.
    Unverified trunks (``tls.verify: false``) are logged: for tests against self-signed carriers."""
    state = Path(os.path.expanduser(str(cfg.server.state_dir)))
    peers: dict[tuple[str, int], PeerTls] = {}
    for name, t in cfg.trunks.items():
        if t.transport != "tls":
            continue
        host, port = str(t.address.host), int(t.address.port)
        opts = t.tls
        ca = Path(os.path.expanduser(opts.ca_file)) if opts is not None and opts.ca_file else None
        if ca is not None and not ca.is_absolute():
            ca = state / ca
        verify = opts.verify if opts is not None else True
        if not verify:
            log.warning("trunk_tls_not_verified", trunk=name)
        peers[(host, port)] = peer_tls(
            (opts.server_name if opts is not None and opts.server_name else host),
            ca, opts.fingerprint if opts is not None else None, verify,
        )  # fmt: skip
    return peers


DEMO_TLS, DEMO_WS, DEMO_WSS = "0.0.0.0:5061", "0.0.0.0:8080", "0.0.0.0:8443"


def demo_secure_settings(state_dir: str) -> SecureSettings:
    """``sipcore serve --demo-tls`` (``make run``): TLS, WS and WSS on their demo ports with a
    self-signed pair under ``state_dir/tls``, created when missing. Not for production."""
    tls_dir = Path(os.path.expanduser(state_dir)) / "tls"
    cfg = ServerTls(tls_dir / "demo.crt", tls_dir / "demo.key", self_signed=True)
    free = [text if _bindable(text) else None for text in (DEMO_TLS, DEMO_WS, DEMO_WSS)]
    for text, wanted in zip(free, (DEMO_TLS, DEMO_WS, DEMO_WSS), strict=True):
        if text is None:
            log.warning("demo_listener_skipped", address=wanted, reason="address in use")
    tls, ws, wss = ([t] if t else [] for t in free)
    return SecureSettings(tls=tls, ws=ws, wss=wss, context=server_context(cfg))


def _bindable(text: str) -> bool:
    """Whether a TCP listener could bind ``text`` now: a demo port another program holds is left out
    (with a warning) rather than stopping `make run`."""
    host, port = text.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError:
            return False
    return True
