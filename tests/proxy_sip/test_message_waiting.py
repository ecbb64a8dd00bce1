"""Message waiting over real sockets (RFC 6665 SUBSCRIBE/NOTIFY, RFC 3842): a UA plays the media
service on ``proxy.media_service``; phones subscribe through the proxy (407 first), the media service
gets the SUBSCRIBE for ``mailbox-<account>`` without the phone's credentials, and its in-dialog NOTIFY
reaches the phone over the phone's flow (a private Contact over UDP, the phone's own connection over
TCP). Other packages and other people's mailboxes are refused; the unsolicited NOTIFY reaches every
registered contact; 2222 reaches the owner's mailbox menu and leaves an on-net CDR that says so.
The same flows run with two workers (``sipcore serve --workers 2``)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sipcore.message import Request, Response
from tests.conftest import free_port
from tests.proxy_sip.configs import DOMAIN, password, write_config
from tests.proxy_sip.conftest import Platform, platform
from tests.proxy_sip.ua import Dialog, Ua
from tests.server.workers_helpers import owned_by, serve

pytestmark = pytest.mark.timeout(60)

SUMMARY = "Messages-Waiting: yes\nMessage-Account: sip:{user}@" + DOMAIN + "\nVoice-Message: 2/1 (0/0)\n"


def wire_length(text: str) -> int:
    """Content-Length of ``text`` as ``Ua.send`` puts it on the wire (each LF sent as CRLF)."""
    return len(text) + text.count("\n")


@contextlib.asynccontextmanager
async def with_media(tmp_path: Path) -> AsyncIterator[tuple[Platform, Ua]]:
    """The proxy with ``proxy.media_service`` at a UA the test drives (a plain UDP socket)."""
    port = free_port()
    async with platform(tmp_path, media_port=port) as proxy:
        media = await Ua.open("media", "", proxy.address, port=port)
        proxy.uas.append(media)
        yield proxy, media


def is_request(method: str, call_id: str | None = None) -> Callable[[Request | Response], bool]:
    return lambda m: isinstance(m, Request) and m.method == method and call_id in (None, m.call_id)


def in_dialog_notify(media: Ua, sub: Request, body: str) -> None:
    """The media service's NOTIFY in the dialog its 200 (``Ua.answer``) created: to the subscriber's
    Contact, over the Record-Route set in order (RFC 3261 §12.1.1), first hop the proxy."""
    routes = "".join(f"Route: {r}\n" for r in sub.headers.get_all("record-route"))
    contact = sub.headers.get("contact") or ""
    to_tag = f"{media.user}-{sub.call_id[:8]}"
    media.send(
        f"NOTIFY {contact[contact.index('<') + 1 : contact.index('>')]} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{media.port};branch=z9hG4bK{secrets.token_hex(6)};rport\n{routes}"
        f"Max-Forwards: 70\nFrom: {sub.headers.get('to')};tag={to_tag}\nTo: {sub.headers.get('from')}\n"
        f"Call-ID: {sub.call_id}\nCSeq: 1 NOTIFY\nContact: <sip:media@127.0.0.1:{media.port}>\n"
        "Event: message-summary\nSubscription-State: active;expires=3600\n"
        f"Content-Type: application/simple-message-summary\nContent-Length: {wire_length(body)}\n\n{body}"
    )


def unsolicited(sender: Ua, box: str, proxy: tuple[str, int], call_id: str | None = None) -> str:
    """What the media service sends for phones that never subscribe: out of dialog, from its socket."""
    call_id = call_id or secrets.token_hex(8)
    body = SUMMARY.format(user=box.rsplit("-", 1)[-1])
    host, port = proxy
    sender.send(
        f"NOTIFY sip:mailbox-{box}@{host}:{port} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{sender.port};branch=z9hG4bK{secrets.token_hex(6)};rport\n"
        f"Max-Forwards: 70\nFrom: <sip:media@127.0.0.1:{sender.port}>;tag={secrets.token_hex(4)}\n"
        f"To: <sip:mailbox-{box}@{host}:{port}>\nCall-ID: {call_id}\nCSeq: 1 NOTIFY\n"
        f"Contact: <sip:media@127.0.0.1:{sender.port}>\nEvent: message-summary\nSubscription-State: active\n"
        f"Content-Type: application/simple-message-summary\nContent-Length: {wire_length(body)}\n\n{body}"
    )
    return call_id


async def subscribe_and_notify(phone: Ua, media: Ua, call_id: str | None = None) -> tuple[Dialog, Request]:
    """The whole subscription: 407, SUBSCRIBE to the media service, its 200, an in-dialog NOTIFY the
    phone receives and answers, then the phone unsubscribes (Expires: 0) through the proxy."""
    forged = "P-Asserted-Identity: <sip:+33140000000@demo.sipcore.test>\n"
    dlg = await phone.subscribe(phone.user, call_id=call_id, extra=forged)
    sub = await media.expect(is_request("SUBSCRIBE", dlg.call_id), 5, "SUBSCRIBE")
    assert isinstance(sub, Request)
    media.answer(sub)
    ok = await phone.response(dlg.call_id, "SUBSCRIBE", timeout=5)
    assert ok.status == 200, ok.start_line()
    phone.established(dlg, ok)
    assert dlg.route_set and all(f":{phone.server[1]}" in r for r in dlg.route_set)  # through the proxy
    in_dialog_notify(media, sub, SUMMARY.format(user=phone.user))
    notify = await phone.expect(is_request("NOTIFY", dlg.call_id), 5, "NOTIFY")
    assert isinstance(notify, Request)
    assert notify.body == SUMMARY.format(user=phone.user).replace("\n", "\r\n").encode()
    answered = await media.response(dlg.call_id, "NOTIFY", timeout=5)
    assert answered.status == 200
    phone.in_dialog(dlg, "SUBSCRIBE", extra="Event: message-summary\nExpires: 0\n")
    refresh = await media.expect(is_request("SUBSCRIBE", dlg.call_id), 5, "unsubscribe")
    assert isinstance(refresh, Request) and refresh.to_tag is not None
    assert refresh.headers.get("expires") == "0"
    media.answer(refresh)
    assert (await phone.response(dlg.call_id, "SUBSCRIBE", timeout=5)).status == 200
    return dlg, sub


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_subscribe_reaches_the_mailbox_and_its_notify_the_phone(tmp_path: Path, tcp: bool) -> None:
    """The phone's Contact is a private address nothing listens on (a phone behind NAT), so the
    NOTIFY reaches it only over its flow: its source address (UDP), its open connection (TCP)."""
    async with with_media(tmp_path) as (proxy, media):
        phone = await proxy.phone("1001", register=False, tcp=tcp)
        phone.contact_host = "192.0.2.99"  # TEST-NET: a datagram sent there is lost
        await phone.register()
        _, sub = await subscribe_and_notify(phone, media)
        assert sub.uri == f"sip:mailbox-demo-1001@127.0.0.1:{media.port}"
        assert sub.headers.get_all("proxy-authorization") == []
        assert sub.headers.get_all("p-asserted-identity") == [
            f"<sip:1001@{DOMAIN}>"
        ]  # ours, not the forged one
        assert sub.headers.get("event") == "message-summary"
        assert len(sub.headers.get_all("record-route")) == (2 if tcp else 1)  # UDP <-> TCP: both sides
        assert [r for r in phone.received if isinstance(r, Request) and r.method == "SUBSCRIBE"] == []
        assert proxy.ended == []  # a subscription is no call


async def test_the_voicemail_code_names_the_own_mailbox(tmp_path: Path) -> None:
    async with with_media(tmp_path) as (proxy, media):
        phone = await proxy.phone("1002")
        dlg = await phone.subscribe("2222")
        sub = await media.expect(is_request("SUBSCRIBE", dlg.call_id), 5, "SUBSCRIBE")
        assert isinstance(sub, Request) and sub.uri == f"sip:mailbox-demo-1002@127.0.0.1:{media.port}"


async def test_someone_elses_mailbox_is_forbidden_and_other_packages_are_bad_events(tmp_path: Path) -> None:
    async with with_media(tmp_path) as (proxy, media):
        phone = await proxy.phone("1001")
        dlg = await phone.subscribe("1002")
        assert (await phone.response(dlg.call_id, "SUBSCRIBE")).status == 403
        presence = await phone.subscribe("1001", event="presence", challenged=False)
        bad = await phone.response(presence.call_id, "SUBSCRIBE")
        assert (bad.status, bad.headers.get("allow-events")) == (489, "message-summary")
        await asyncio.sleep(0.2)
        assert media.received == []


async def test_unsolicited_notify_reaches_every_contact(tmp_path: Path) -> None:
    async with with_media(tmp_path) as (proxy, media):
        desk = await proxy.phone("1002", register=False)
        desk.contact_host = "192.0.2.98"  # behind NAT: reached at its source address only
        await desk.register()
        soft = await proxy.phone("1002", tcp=True)
        call_id = unsolicited(media, "demo-1002", proxy.address)
        answer = await media.response(call_id, "NOTIFY")
        assert answer.status == 200
        for phone in (desk, soft):
            notify = await phone.expect(is_request("NOTIFY", call_id), 5, "NOTIFY")
            assert isinstance(notify, Request)
            assert notify.headers.get("to") == f"<sip:1002@{DOMAIN}>"
            assert notify.headers.get("event") == "message-summary"
            assert notify.headers.get("content-type") == "application/simple-message-summary"
            assert notify.body == SUMMARY.format(user="1002").replace("\n", "\r\n").encode()
        await asyncio.sleep(0.3)  # the phones' 200s stop at the proxy
        assert [m.status for m in media.received if isinstance(m, Response)] == [200]


async def test_unsolicited_notify_without_contacts_unknown_or_not_from_the_media_service(
    tmp_path: Path,
) -> None:
    async with with_media(tmp_path) as (proxy, media):
        alice = await proxy.phone("1001")
        nobody = unsolicited(media, "demo-1003", proxy.address)  # 1003 is not registered
        assert (await media.response(nobody, "NOTIFY")).status == 480
        unknown = unsolicited(media, "demo-9999", proxy.address)
        assert (await media.response(unknown, "NOTIFY")).status == 404
        forged = unsolicited(alice, "demo-1001", proxy.address)  # a phone pretending
        assert (await alice.response(forged, "NOTIFY")).status == 403
        await asyncio.sleep(0.2)
        assert [m for m in alice.received if isinstance(m, Request)] == []


async def test_2222_reaches_the_mailbox_menu_with_an_on_net_cdr(tmp_path: Path) -> None:
    async with with_media(tmp_path) as (proxy, media):
        alice = await proxy.phone("1001")
        dlg = await alice.call("2222")
        invite = await media.expect(is_request("INVITE", dlg.call_id), 5, "INVITE")
        assert isinstance(invite, Request)
        assert invite.uri == f"sip:mailbox-demo-1001@127.0.0.1:{media.port}"
        assert invite.headers.get_all("p-asserted-identity") == [f"<sip:1001@{DOMAIN}>"]
        assert invite.headers.get_all("proxy-authorization") == []
        ok = await alice.response(dlg.call_id)
        assert ok.status == 200
        alice.ack(dlg, ok)
        alice.in_dialog(dlg, "BYE")
        assert (await alice.response(dlg.call_id, "BYE")).status == 200
        for _ in range(100):
            if proxy.ended:
                break
            await asyncio.sleep(0.02)
    [ended] = proxy.ended
    assert (ended.direction, ended.dialed, ended.normalised, ended.disposition) == (
        "internal", "2222", "mailbox-demo-1001", "answered",
    )  # fmt: skip
    db = sqlite3.connect(tmp_path / "state" / "cdr.sqlite3")  # the app is closed: the CDR is stored
    rows = db.execute("SELECT direction, normalised, disposition, price_micros FROM cdr").fetchall()
    assert rows == [("internal", "mailbox-demo-1001", "answered", 0)]


async def test_message_waiting_with_two_workers(tmp_path: Path) -> None:
    """Subscriptions, their NOTIFYs and unsolicited NOTIFYs whose Call-IDs each worker owns, with a
    UDP and a TCP phone: the flow token opens in every worker (one nonce secret), and a NOTIFY for
    the TCP phone is written on its connection by whichever worker holds it."""
    media_port = free_port()
    path = write_config(tmp_path, free_port(), free_port(), media_port=media_port)
    async with serve(path, 2) as served:
        media = await Ua.open("media", "", served.address, port=media_port)
        udp = await Ua.open("1001", password("1001"), served.address)
        tcp = await Ua.open_tcp("1002", password("1002"), served.address)
        udp.contact_host = tcp.contact_host = "192.0.2.99"  # behind NAT: only their flows reach them
        try:
            for phone in (udp, tcp):
                await phone.register(timeout=5)
            for owner in (0, 1):
                for phone in (udp, tcp):
                    await subscribe_and_notify(phone, media, owned_by(owner, 2))
                    call_id = unsolicited(media, f"demo-{phone.user}", served.address, owned_by(owner, 2))
                    assert (await media.response(call_id, "NOTIFY", timeout=5)).status == 200
                    await phone.expect(is_request("NOTIFY", call_id), 5, "unsolicited NOTIFY")
        finally:
            for ua in (media, udp, tcp):
                ua.close()
        assert await served.stop() == 0, served.stderr.decode()[-2000:]
