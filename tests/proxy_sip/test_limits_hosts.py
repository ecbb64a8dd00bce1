"""Simultaneous-call limits and call-rate windows across two hosts (two `sipcore serve` sharing Redis,
each its own state directory and host lock): a burst of one account's calls split over both hosts is
admitted in Redis in one step per call (server.account_state_redis `_ADMIT`), so ``max_calls: 1``
gets exactly one call and ``calls_per_second: 2`` exactly two, whichever host each call enters."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from sipcore.message import Response
from tests.conftest import free_port
from tests.proxy_sip.test_toll_fraud import DOMAIN, RATES, challenged, fraud_yaml, platform
from tests.proxy_sip.ua import Dialog, Ua
from tests.server.workers_helpers import serve

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

LIMITS = {  # the accounts of test_toll_fraud's platform, limited for this test
    "password: pw4001, max_calls: 2, block_premium: true": "password: pw4001, max_calls: 1",
    "password: pw4005, calls_per_second: 1": "password: pw4005, calls_per_second: 2, max_calls: 100",
}


def limited_yaml(port: int, trunk_port: int, state: Path, prefix: str | None) -> str:
    text = fraud_yaml(port, trunk_port, state, 1, prefix)
    for old, new in LIMITS.items():
        assert old in text
        text = text.replace(old, new)
    return text


async def interleaved(a: Ua, b: Ua, call_ids: list[str], dialed: str) -> list[tuple[Ua, Dialog, Response]]:
    """Every 407 round first, then the authenticated INVITEs at once, alternately to each host (each
    host decides its first call before the other's count can reach it); their first answers past 1xx."""
    armed = list(zip(await challenged(a, dialed, call_ids[::2]), await challenged(b, dialed, call_ids[1::2]),
                     strict=True))  # fmt: skip
    sent = [(c, c.invite(dialed, 2, d.credentials, d.call_id, d.from_tag)) for pair in armed
            for c, d in zip((a, b), pair, strict=True)]  # fmt: skip
    finals = [await c.response(d.call_id, timeout=10) for c, d in sent]
    for (c, dlg), final in zip(sent, finals, strict=True):
        c.ack(dlg, final)
    return [(c, dlg, final) for (c, dlg), final in zip(sent, finals, strict=True)]


async def test_a_burst_over_two_hosts_gets_max_calls_and_the_call_rate_once(tmp_path: Path) -> None:
    async with platform(tmp_path / "a", 1, True) as (net, trunk, path):
        trunk.mode = "answer"
        path.write_text(
            limited_yaml(net.port, trunk.port, path.parent / "state", net.prefix), encoding="utf-8"
        )
        other_port, other = free_port(), tmp_path / "b"
        other.mkdir()
        (other / "rates.csv").write_text(RATES, encoding="utf-8")
        other_path = other / "fraud.yaml"
        other_path.write_text(
            limited_yaml(other_port, trunk.port, other / "state", net.prefix), encoding="utf-8"
        )
        async with serve(path, 1, port=net.port) as host_a, serve(other_path, 1, port=other_port) as host_b:
            for extension, admitted, words in (("4001", 1, "Simultaneous call limit reached (1)"),
                                               ("4005", 2, "Call rate limit reached (2 per second)")):  # fmt: skip
                on_a = await net.caller(extension)
                on_b = await Ua.open(extension, f"pw{extension}", ("127.0.0.1", other_port))
                on_b.domain = DOMAIN
                net.uas.append(on_b)
                ids = [secrets.token_hex(8) for _ in range(8)]
                results = await interleaved(on_a, on_b, ids, "0612345678")
                statuses = [final.status for _, _, final in results]
                oks = [(caller, dlg) for caller, dlg, final in results if final.status == 200]
                assert len(oks) == admitted and statuses.count(403) == 8 - admitted, (extension, statuses)
                warnings = [
                    final.headers.get("warning") or "" for *_, final in results if final.status == 403
                ]
                assert all(words in w for w in warnings), warnings
                for caller, dlg in oks:  # hung up: the next account's burst starts from no call at all
                    caller.in_dialog(dlg, "BYE")
                    assert (await caller.response(dlg.call_id, "BYE", timeout=5)).status == 200
            assert await host_a.stop() == 0
            assert await host_b.stop() == 0
