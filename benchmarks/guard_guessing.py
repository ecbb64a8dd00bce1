"""Password guessing against `sipcore serve` for docs/reliability.md (issue 20): how many guesses a
source gets answered before its ban with ``workers`` 1 and 2, and a distributed attack on one user
while the real phone keeps registering. Loopback only (127.0.0.0/8), loopback taken out of the
guard's whitelist; bounded in count and time. Prints one JSON object.

    python -m benchmarks.guard_guessing --workers 1 2
    python -m benchmarks.guard_guessing --tree /tmp/sipcore-before --workers 1 2   # another tree's code

``one_source``: one address guesses with a new socket (new source port) per guess, at usernames
whose REGISTERs are owned by alternate workers, REGISTER over UDP and INVITE over UDP (new Call-ID
each), until a guess goes unanswered; ``distributed``: 20 addresses guess one username in turn while
its phone registers every 0.5 s from its own address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

from sipcore.digest import build_authorization
from sipcore.ownership import owner_of_call_id
from sipcore.waiting import wait_set, within
from tests.registrar_sip.client import Phone, SipClient
from tests.registrar_sip.configs import DOMAIN, PASSWORDS, write_config

ROOT = Path(__file__).resolve().parents[1]
SILENCE = 0.5  # no answer within this: dropped (a live answer on loopback takes milliseconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_owned_by(worker: int, workers: int, n: int) -> str:
    """The n-th username (unknown to the server) whose REGISTERs worker ``worker`` owns."""
    found = -1
    i = 0
    while True:
        name = f"guess{i}"
        if zlib.crc32(name.encode()) % workers == worker:
            found += 1
            if found == n:
                return name
        i += 1


# ---- the server ---------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def served(
    directory: Path, guard: str, workers: int, tree: Path = ROOT
) -> AsyncIterator[tuple[tuple[str, int], int, list[str]]]:
    """``sipcore serve`` from ``tree`` until READY=1; yields (address, metrics port, its log lines so
    far — complete once the context exits)."""
    port, metrics_port = free_port(), free_port()
    config = write_config(directory, port, guard=guard, metrics_port=metrics_port)
    name = f"sipcore-guess-{secrets.token_hex(6)}"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind("\0" + name)
    notify.setblocking(False)
    env = dict(os.environ, PYTHONPATH=str(tree), NOTIFY_SOCKET="@" + name)
    addr = f"127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--no-media", "--config", str(config),
        "--workers", str(workers), "--udp", addr, "--tcp", addr, "--metrics", f"127.0.0.1:{metrics_port}",
        cwd=str(tree), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    lines: list[str] = []
    try:
        try:
            state = await within(asyncio.get_running_loop().sock_recv(notify, 64), 30)
        finally:
            notify.close()
        if state != b"READY=1":
            raise RuntimeError(f"server did not start: {state!r}")
        yield ("127.0.0.1", port), metrics_port, lines
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await within(proc.communicate(), 30)
        lines.extend(ln for ln in err.decode(errors="replace").splitlines() if ln.startswith("{"))


async def scrape(metrics_port: int) -> str:
    reader, writer = await within(asyncio.open_connection("127.0.0.1", metrics_port), 3)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
    data = await within(reader.read(), 5)
    writer.close()
    return data.decode()


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
    return total


# ---- guesses ------------------------------------------------------------------------------------------
async def register_guess(address: tuple[str, int], source: str, user: str, password: str) -> int | None:
    """One guess on a new socket: REGISTER, answer its 401 with ``password``; the final status, None
    when a step went unanswered."""
    client = await SipClient.open(address, "UDP", source)
    try:
        return await _register(Phone(client, user, password))
    finally:
        await client.close()


async def _register(phone: Phone, password: str | None = None) -> int | None:
    resp = await phone.register(expires=600, password=password, timeout=SILENCE)
    return None if resp is None else resp.status


def invite_bytes(client: SipClient, user: str, authorization: str | None, call_id: str, cseq: int) -> bytes:
    lines = [
        f"INVITE sip:1002@{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/UDP {client.local_host}:{client.local_port};branch=z9hG4bK{secrets.token_hex(6)};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{DOMAIN}>;tag={secrets.token_hex(4)}",
        f"To: <sip:1002@{DOMAIN}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} INVITE",
        f"Contact: <sip:{user}@{client.local_host}:{client.local_port}>",
        "User-Agent: guesser",
    ]
    if authorization:
        lines.append(f"Proxy-Authorization: {authorization}")
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


async def invite_guess(
    address: tuple[str, int], source: str, user: str, password: str, owner: tuple[int, int] | None = None
) -> int | None:
    """One guess on a new socket and a new Call-ID (so its owner is any worker, or the worker
    ``owner`` = (index, workers) names): INVITE, 407, INVITE with Proxy-Authorization; the final
    status (407 for a wrong password), None when unanswered."""
    client = await SipClient.open(address, "UDP", source)
    try:
        call_id = secrets.token_hex(8)
        while owner is not None and owner_of_call_id(call_id, owner[1]) != owner[0]:
            call_id = secrets.token_hex(8)
        first = await client.request(invite_bytes(client, user, None, call_id, 1), SILENCE)
        if first is None:
            return None
        if first.status != 407:
            return first.status
        client.send(_ack(client, first, call_id))
        challenge = first.headers.get("proxy-authenticate")
        auth = build_authorization(
            str(challenge), username=user, password=password, method="INVITE", uri=f"sip:1002@{DOMAIN}"
        )
        second = await client.request(invite_bytes(client, user, auth, call_id, 2), SILENCE)
        if second is not None and second.status >= 300:
            client.send(_ack(client, second, call_id, 2))
        return None if second is None else second.status
    finally:
        await client.close()


def _ack(client: SipClient, resp: object, call_id: str, cseq: int = 1) -> bytes:
    headers = resp.headers  # type: ignore[attr-defined]
    return (
        f"ACK sip:1002@{DOMAIN} SIP/2.0\r\nVia: {headers.get('via')}\r\nMax-Forwards: 70\r\n"
        f"From: {headers.get('from')}\r\nTo: {headers.get('to')}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def one_source(
    address: tuple[str, int], source: str, workers: int, method: str, limit: int = 60, after: int = 10
) -> dict[str, object]:
    """Guesses from ``source`` until one goes unanswered (at most ``limit``); then ``after`` more
    requests on new sockets (read by any worker, owned by alternate ones) to see each drop the source.
    Each guess is owned by the next worker in turn, so with several workers every one checks some."""
    answered = 0
    for n in range(limit):
        if method == "REGISTER":
            user = user_owned_by(n % max(workers, 2), max(workers, 2), n // 2)
            status = await register_guess(address, source, user, "guess")
        else:
            status = await invite_guess(address, source, "1001", "guess", owner=(n % workers, workers))
        if status is None:
            break
        answered += 1
    dropped_answered = 0
    for n in range(after):  # each on a new socket: read by any worker
        user = user_owned_by(n % 2, 2, 100 + n)
        if await register_guess(address, source, user, "guess") is not None:
            dropped_answered += 1
    return {"answered_before_ban": answered, "answered_after_ban": dropped_answered}


async def distributed(
    address: tuple[str, int],
    user: str,
    sources: list[str],
    real_source: str,
    rounds: int,
    fresh: tuple[str, ...] = (),
    method: str = "REGISTER",
) -> dict[str, object]:
    """``sources`` guess ``user`` in turn (each on its own address, new sockets) while the phone
    registers every 0.5 s from ``real_source``; counts the guesses answered (checked) and the phone's
    registrations answered 200. Then each ``fresh`` address (never seen) tries the *right* password:
    how many get in while the user is under attack. ``method``: the guesses' (INVITE: a new Call-ID
    each, so with several workers each goes to any of them)."""
    stop = asyncio.Event()
    phone_ok = phone_total = 0

    async def real_phone() -> None:
        nonlocal phone_ok, phone_total
        client = await SipClient.open(address, "UDP", real_source)
        phone = Phone(client, user, PASSWORDS[user])
        try:
            while not stop.is_set():
                phone_total += 1
                if await _register(phone) == 200:
                    phone_ok += 1
                await wait_set(stop, 0.5)
        finally:
            await client.close()

    task = asyncio.create_task(real_phone())
    await asyncio.sleep(0.3)  # the phone logs in first, as a phone in service would have
    answered = sent = 0
    try:
        for _ in range(rounds):
            for source in sources:
                sent += 1
                guess = register_guess if method == "REGISTER" else invite_guess
                if await guess(address, source, user, "guess") is not None:
                    answered += 1
        admitted = 0
        for source in fresh:
            if await register_guess(address, source, user, PASSWORDS[user]) == 200:
                admitted += 1
    finally:
        stop.set()
        await task
    return {
        "guesses": sent,
        "answered": answered,
        "fresh_right_password": len(fresh),
        "fresh_admitted": admitted,
        "phone_ok": phone_ok,
        "phone_total": phone_total,
    }


# ---- the figures --------------------------------------------------------------------------------------
async def measure(workers: int, tree: Path) -> dict[str, object]:
    out: dict[str, object] = {"workers": workers}
    one = "{failure_threshold: 10, window: 60, ban_time: 600, slow_threshold: 0, whitelist: []}"
    for method, net in (("REGISTER", 1), ("INVITE", 2)):
        with tempfile.TemporaryDirectory() as tmp:
            async with served(Path(tmp), one, workers, tree) as (address, metrics_port, _):
                out[f"one_source_{method}"] = await one_source(
                    address, f"127.0.{net}.{workers}", workers, method
                )
    many = "{failure_threshold: 10, user_failure_threshold: 30, window: 60, ban_time: 600, whitelist: []}"
    for method in ("REGISTER", "INVITE"):
        with tempfile.TemporaryDirectory() as tmp:
            async with served(Path(tmp), many, workers, tree) as (address, metrics_port, lines):
                sources = [f"127.0.9.{i}" for i in range(1, 21)]
                fresh = tuple(f"127.0.10.{i}" for i in range(2, 7))
                found = await distributed(address, "1001", sources, "127.0.10.1", 9, fresh, method)
                found["bans_total"] = metric(await scrape(metrics_port), "sipcore_bans_total")
            found["ban_lines"] = sum('"source_banned"' in ln for ln in lines)
            out[f"distributed_{method}"] = found
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the source tree whose server to run")
    args = parser.parse_args()

    async def run() -> list[dict[str, object]]:
        return [await measure(w, args.tree.resolve()) for w in args.workers]

    print(json.dumps({"tree": str(args.tree), "results": asyncio.run(run())}, indent=1))


if __name__ == "__main__":
    main()
