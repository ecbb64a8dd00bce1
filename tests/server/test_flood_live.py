"""A one-source flood against `sipcore serve` (a real subprocess, `server.workers` 1 and 2): the
flooder (127.0.0.66, full speed, a second and a half) goes over the request-rate limit and is banned
— in nftables too where the machine allows — while the good phones (127.0.0.77: REGISTER with digest
and OPTIONS) keep being answered and the server's memory stays put. Count-based, not timing-based;
the long measurement is `python -m benchmarks.flood_udp` (docs/reliability.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks.flood_udp import FLOODER, scenario


def _nft_usable() -> bool:
    if shutil.which("nft") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["nft", "list", "tables"], capture_output=True, timeout=10).returncode == 0


@pytest.mark.parametrize(
    ("workers", "kind", "nft"),
    [(1, "options", False), (1, "garbage", False), (2, "invite", True)],
    ids=["1-worker-options", "1-worker-garbage", "2-workers-invite-nft"],
)
async def test_flooder_is_banned_and_the_good_phones_keep_being_answered(
    tmp_path: Path, workers: int, kind: str, nft: bool
) -> None:
    if nft and not _nft_usable():
        pytest.skip("nft missing or not permitted: the kernel mirror is not tested here")
    result = await scenario(kind, workers, 1.5, nft=nft, directory=tmp_path, settle=1.0)
    bans = [b for b in result["bans"] if b["source"] == FLOODER]  # type: ignore[union-attr, index]
    assert len(bans) == 1 and bans[0]["reason"] == "request rate", result["bans"]  # logged once
    assert result["flood_sent"] > 1000  # type: ignore[operator]
    during, after = result["phone_during"], result["phone_after"]
    assert during["answered"] >= 5, during  # type: ignore[index]
    assert after["requests"] >= 5 and after["answered"] == after["requests"], after  # type: ignore[index]
    assert result["tracebacks"] == 0
    assert result["rss_mb"]["growth_peak"] < 100, result["rss_mb"]  # type: ignore[index]
    if nft:
        assert result["nft_failed"] == 0 and FLOODER in result["nft_elements"], result  # type: ignore[operator]
