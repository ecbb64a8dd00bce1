"""Two workers with UDP steering (sipcore/steering.py): every message of a call whose Call-ID the
kernel can read reaches its owner directly, so the calls cross no message between the workers;
with ``server.udp_steering: false`` (one shared socket) the same calls do. Either way the calls
complete (the hand-off stays the fallback)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from sipcore.ownership import owner_of_call_id
from tests.server.test_workers_calls import BY_OWNER, USERS, call, config, phone
from tests.server.workers_helpers import metric, owned_by, serve

pytestmark = pytest.mark.timeout(120)

WORKERS = 2


def _long_call_id(owner: int, round_: int) -> str:
    """A Call-ID of 40 bytes owned by ``owner``: the kernel hashes its first 32 (call_id_slot)."""
    while True:
        call_id = f"{secrets.token_hex(16)}-steer-{round_}"
        if owner_of_call_id(call_id, WORKERS) == owner:
            return call_id


async def _messages_handed_over(steering: bool, tmp_path: Path) -> tuple[float, float]:
    """Message hand-offs during 8 calls with long Call-IDs, then during 4 with short ones."""
    path = config(tmp_path)
    if not steering:
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("server:\n", "server:\n  udp_steering: false\n", 1), encoding="utf-8")
    async with serve(path, WORKERS) as served:
        uas = [await phone(served.address, u) for u in USERS]
        try:
            by_user = {ua.user: ua for ua in uas}

            async def handed() -> float:
                return metric(
                    await served.metrics(), "sipcore_worker_handoffs_total", direction="out", kind="message"
                )

            before = await handed()
            for round_ in range(2):
                for call_owner in range(WORKERS):
                    for a_owner in range(WORKERS):
                        caller = by_user[BY_OWNER[a_owner][0]]
                        callee = by_user[BY_OWNER[1 - a_owner][1]]
                        await call(caller, callee, _long_call_id(call_owner, round_))
            long_ids = await handed() - before
            before = await handed()
            for call_owner in range(WORKERS):
                for a_owner in range(WORKERS):
                    caller = by_user[BY_OWNER[a_owner][0]]
                    callee = by_user[BY_OWNER[1 - a_owner][1]]
                    await call(caller, callee, owned_by(call_owner, WORKERS))  # 12 bytes: crc32
            return long_ids, await handed() - before
        finally:
            for ua in uas:
                ua.close()
            assert await served.stop() == 0, served.stderr.decode()[-2000:]


async def test_steered_calls_cross_nothing_between_the_workers(tmp_path: Path) -> None:
    long_ids, short_ids = await _messages_handed_over(True, tmp_path)
    assert long_ids == 0
    # a Call-ID under 16 bytes is hashed by crc32, which the kernel cannot: the fallback carries it
    assert short_ids > 0


async def test_without_steering_the_same_calls_are_handed_over(tmp_path: Path) -> None:
    long_ids, _ = await _messages_handed_over(False, tmp_path)
    assert long_ids > 0
