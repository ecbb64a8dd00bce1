"""Account state with ``server.workers: 2``, over the wire, with the memory (replicated) and the Redis
location backends: a forwarding set by feature code in one worker is obeyed by the other, call
waiting off gives busy whichever worker owns the second call, and ``max_calls`` counts the calls of
every worker.

Each scenario runs once per direction: the Call-IDs are chosen so that the change is made by one
worker and read by the other (`owned_by`), not left to which worker the kernel wakes. Before the
next request, the Redis runs wait until Redis holds the change (the other worker's subscription
then has it in its socket before the request leaves); the memory runs need no wait: the replica's
frame leaves before the answer that announces the change (forwarding), or at the end of the event
loop iteration that made it (counts), ahead of anything the test sends next.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from sipcore.digest import build_authorization
from sipcore.message import Response
from tests.conftest import free_port
from tests.proxy_sip.ua import Dialog, Ua
from tests.server.workers_helpers import owned_by, serve

pytestmark = pytest.mark.timeout(90)

WORKERS = 2
DOMAIN = "demo.sipcore.test"
TRUNK_HOST = "127.0.0.2"
REDIS_URL = "redis://127.0.0.1:6379/0"


def yaml(port: int, trunk_port: int, state_dir: Path, location: str) -> str:
    return f"""\
default_domain: {DOMAIN}
server:
  listen: {{udp: ["127.0.0.1:{port}"], tcp: ["127.0.0.1:{port}"]}}
  advertised_address: 127.0.0.1:{port}
  local_addresses: [127.0.0.1, localhost]
  metrics: null
  log: {{format: json, level: warning}}
  state_dir: {state_dir}
registrar:
  realm: {DOMAIN}
  nonce_secret: workers-account-state-secret-0123
  location: {location}
proxy:
  outbound_trunk: carrier
trunks:
  carrier: {{address: "{TRUNK_HOST}:{trunk_port}", transport: udp, inbound_sources: [{TRUNK_HOST}]}}
rating:
  rate_tables: {{t: rates.csv}}
  packages:
    p: {{rate_table: t, markup: {{fixed: 0, percent: 0}}, pulse: 60}}
customers:
  - id: demo
    name: Demo SARL
    reference: CUST-0001
    country: FR
    domains: [{DOMAIN}]
    default_package: p
    accounts:
      - {{extension: "1001", username: "1001", password: pw1001, call_waiting: false}}
      - {{extension: "1002", username: "1002", password: pw1002}}
      - {{extension: "1003", username: "1003", password: pw1003}}
      - {{extension: "1004", username: "1004", password: pw1004, call_waiting: false,
         forwarding: {{busy: {{to: "1005"}}}}}}
      - {{extension: "1005", username: "1005", password: pw1005}}
      - {{extension: "1006", username: "1006", password: pw1006, max_calls: 2}}
"""


@dataclass
class Shared:
    """Where the other worker reads the account state from; `settled` waits (Redis runs only) until
    a change is there."""

    backend: str
    prefix: str
    redis: aioredis.Redis | None

    @property
    def location(self) -> str:
        if self.backend == "memory":
            return "{backend: memory, state_file: null}"
        return f'{{backend: redis, url: "{REDIS_URL}", key_prefix: "{self.prefix}"}}'

    async def calls(self, account_id: str) -> int:
        assert self.redis is not None
        total = 0
        async for key in self.redis.scan_iter(match=f"{self.prefix}acct:calls:*", count=1000):
            total += int(await self.redis.hget(key, account_id) or 0)
        return total

    async def forwarding(self, account_id: str, kind: str) -> object:
        assert self.redis is not None
        raw = await self.redis.hget(f"{self.prefix}acct:fwd", json.dumps([account_id, kind]))
        return json.loads(raw)[1] if raw is not None else "unset"

    async def settled_calls(self, account_id: str, calls: int) -> None:
        if self.redis is not None:
            await until(lambda: self.calls(account_id), calls, f"{account_id} has {calls} calls in Redis")

    async def settled_forwarding(self, account_id: str, kind: str, target: str | None) -> None:
        if self.redis is not None:
            await until(lambda: self.forwarding(account_id, kind), target, f"{account_id} {kind} -> {target}")


async def until(
    read: Callable[[], Awaitable[object]], expected: object, what: str, timeout: float = 5.0
) -> None:
    """Poll ``read()`` until it returns ``expected``; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (value := await read()) != expected:
        assert loop.time() < deadline, f"not reached within {timeout} s: {what} (last: {value!r})"
        await asyncio.sleep(0.005)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[Shared]:
    if request.param == "memory":
        yield Shared("memory", "", None)
        return
    client = aioredis.from_url(REDIS_URL)
    prefix = f"sipcore-wacct-{secrets.token_hex(6)}:"
    try:
        yield Shared("redis", prefix, client)
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@dataclass
class Server:
    address: tuple[str, int]
    trunk: Ua
    phones: list[Ua] = field(default_factory=list)


@pytest.fixture
async def server(tmp_path: Path, shared: Shared) -> AsyncIterator[Server]:
    port = free_port()
    trunk = await Ua.open("carrier", "", ("127.0.0.1", port), host=TRUNK_HOST)
    (tmp_path / "rates.csv").write_text(
        "prefix,destination,category,cost_per_minute\n+336,FR mobile,mobile,0.02\n"
    )
    config = tmp_path / "workers.yaml"
    config.write_text(yaml(port, trunk.port, tmp_path / "state", shared.location))
    try:
        async with serve(config, WORKERS, port) as served:
            running = Server(served.address, trunk)
            try:
                yield running
            finally:
                for ua in running.phones:
                    ua.close()
            assert await served.stop() == 0, served.stderr.decode()[-2000:]
    finally:
        trunk.close()


async def phone(server: Server, user: str, mode: str = "answer") -> Ua:
    ua = await Ua.open(user, f"pw{user}", server.address)
    server.phones.append(ua)
    ua.mode = mode
    await ua.register(timeout=5)
    return ua


async def dial(caller: Ua, dialed: str, call_id: str) -> Dialog:
    """INVITE on the Call-ID given, answering the 407 challenge; the authenticated INVITE's dialog."""
    dlg = caller.invite(dialed, call_id=call_id)
    first = await caller.response(call_id, final=True, timeout=5)
    assert first.status == 407, first.start_line()
    caller.ack(dlg, first)
    value = build_authorization(first.headers.get("proxy-authenticate") or "", username=caller.user,
                                password=caller.password, method="INVITE", uri=f"sip:{dialed}@{DOMAIN}",
                                cnonce="c0ffee")  # fmt: skip
    return caller.invite(dialed, 2, f"Proxy-Authorization: {value}\n", call_id, dlg.from_tag)


async def final(caller: Ua, dlg: Dialog) -> Response:
    answer = await caller.response(dlg.call_id, final=True, timeout=5)
    caller.ack(dlg, answer)
    return answer


async def connect(caller: Ua, dialed: str, call_id: str, callee: Ua) -> Dialog:
    """A call answered by ``callee`` (whoever was dialed), left in progress."""
    dlg = await dial(caller, dialed, call_id)
    answer = await final(caller, dlg)
    assert answer.status == 200, answer.start_line()
    assert (await callee.request("INVITE", timeout=5)).call_id == call_id
    assert (await callee.request("ACK", timeout=5)).call_id == call_id
    return dlg


async def hang_up(caller: Ua, dlg: Dialog, callee: Ua) -> None:
    caller.in_dialog(dlg, "BYE")
    assert (await callee.request("BYE", timeout=5)).call_id == dlg.call_id
    assert (await caller.response(dlg.call_id, "BYE", timeout=5)).status == 200


def invites(ua: Ua, call_id: str) -> int:
    return sum(1 for r in ua.requests("INVITE") if r.call_id == call_id)


async def test_forwarding_set_by_feature_code_in_one_worker_is_obeyed_by_the_other(
    server: Server, shared: Shared
) -> None:
    alice, bruno, chloe = [await phone(server, u) for u in ("1001", "1002", "1003")]
    for worker in range(WORKERS):
        other = 1 - worker
        code = await final(alice, await dial(alice, "*21*1003#", owned_by(worker, WORKERS)))
        assert (code.status, code.reason) == (486, "Forwarding updated")
        await shared.settled_forwarding("demo/1001", "permanent", "1003")
        call_id = owned_by(other, WORKERS)
        dlg = await connect(bruno, "1001", call_id, chloe)  # forwarded: 1003 rings, 1001 does not
        assert invites(alice, call_id) == 0
        await hang_up(bruno, dlg, chloe)

        code = await final(alice, await dial(alice, "#21#", owned_by(other, WORKERS)))
        assert (code.status, code.reason) == (486, "Forwarding updated")
        await shared.settled_forwarding("demo/1001", "permanent", None)
        call_id = owned_by(worker, WORKERS)
        dlg = await connect(bruno, "1001", call_id, alice)  # cleared in the other worker: 1001 rings
        assert invites(chloe, call_id) == 0
        await hang_up(bruno, dlg, alice)


async def test_call_waiting_off_gives_busy_whichever_worker_owns_the_second_call(
    server: Server, shared: Shared
) -> None:
    alice, bruno, chloe, dan, eve = [await phone(server, u) for u in ("1001", "1002", "1003", "1004", "1005")]
    # 1001 has call waiting off and no busy forward (486); 1004 forwards to 1005 when busy.
    for callee, account, busy_target in ((alice, "demo/1001", None), (dan, "demo/1004", eve)):
        for worker in range(WORKERS):
            first = await connect(bruno, callee.user, owned_by(worker, WORKERS), callee)
            await shared.settled_calls(account, 1)
            call_id = owned_by(1 - worker, WORKERS)
            second = await dial(chloe, callee.user, call_id)
            if busy_target is None:
                assert (await final(chloe, second)).status == 486
            else:
                assert (await final(chloe, second)).status == 200
                assert (await busy_target.request("INVITE", timeout=5)).call_id == call_id
                await busy_target.request("ACK", timeout=5)
                await hang_up(chloe, second, busy_target)
            assert invites(callee, call_id) == 0  # the phone in a call never rang
            await hang_up(bruno, first, callee)
            await shared.settled_calls(account, 0)


async def test_max_calls_counts_the_calls_of_every_worker(server: Server, shared: Shared) -> None:
    caller = await phone(server, "1006")  # max_calls: 2
    server.trunk.mode = "ring"
    held = []
    for worker in range(WORKERS):  # one call in progress in each worker
        dlg = await dial(caller, f"061234567{worker}", owned_by(worker, WORKERS))
        assert (await caller.response(dlg.call_id, final=False, timeout=5)).status == 180
        held.append(dlg)
        await shared.settled_calls("demo/1006", worker + 1)
    for worker in range(WORKERS):  # a third, whichever worker owns it: refused, not sent out
        refused = await final(caller, await dial(caller, "0612345679", owned_by(worker, WORKERS)))
        assert refused.status == 403 and "limit" in (refused.headers.get("warning") or "").lower()
    assert len(server.trunk.requests("INVITE")) == WORKERS
    for dlg in held:
        caller.cancel(dlg)
        assert (await caller.response(dlg.call_id, timeout=5)).status == 487
    await shared.settled_calls("demo/1006", 0)
    after = await dial(caller, "0612345670", owned_by(0, WORKERS))  # the slots are free again
    assert (await caller.response(after.call_id, final=False, timeout=5)).status == 180
    caller.cancel(after)
    assert (await caller.response(after.call_id, timeout=5)).status == 487
