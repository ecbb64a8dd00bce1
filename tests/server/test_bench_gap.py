"""`benchmarks.bench_sip_cpu --gap-ms`: every message of the call is handed after one sleep of the
gap, and the calls still go through whole (each message's answer is checked by the harness)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks.bench_sip_cpu import CALL_MESSAGES, _started, register_callee, run_calls


def test_gap_sleeps_once_before_each_message(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        real_sleep(seconds)

    async def calls() -> tuple[float, list[float]]:
        cwd = os.getcwd()
        with tempfile.TemporaryDirectory() as tmp:
            app, cap, host, port = await _started(Path(tmp))
            try:
                await register_callee(app, cap, host, port)
                slots = [0.0] * len(CALL_MESSAGES)
                with monkeypatch.context() as patch:  # only the calls' sleeps, not the start or close
                    patch.setattr(time, "sleep", sleep)
                    cpu = await run_calls(app, cap, host, port, 3, 0, slots, gap=0.002)
                return cpu, slots
            finally:
                await app.close()
                os.chdir(cwd)

    cpu, slots = asyncio.run(calls())
    assert slept == [0.002] * (3 * len(CALL_MESSAGES))
    assert cpu > 0
    assert all(s > 0 for s in slots)  # every message of the call was handled and timed
