"""What a reload applies without a restart, over real sockets with `sipcore serve` in a subprocess and
`sipcore reload` run as `systemctl reload` does, with one process and with two workers (every worker
must reach the same outcome): a new rate table and package price the calls that start after it (a
call in progress keeps what it started with); an empty file or one without customers is refused by
`check-config` and by the reload (exit 1), and the running configuration keeps serving; a changed
listen address is reported as needing a restart while the rest is applied."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.proxy_sip.configs import password
from tests.proxy_sip.ua import Ua
from tests.server.lifecycle_helpers import cdr_rows, establish, lifecycle_config, serve_process, sipcore
from tests.server.workers_helpers import owned_by

pytestmark = pytest.mark.timeout(120)

MOBILE = "+336,France mobile,mobile,0.02"


def statuses(state_dir: Path) -> dict[str, dict[str, object]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((state_dir / "reload").glob("*.json"))}


async def newer_statuses(state_dir: Path, seqs: dict[str, object]) -> dict[str, dict[str, object]]:
    """The status files once every process has written one newer than ``seqs`` (bounded wait)."""
    for _ in range(200):
        done = statuses(state_dir)
        if all(done[name]["seq"] > seq for name, seq in seqs.items()):  # type: ignore[operator]
            return done
        await asyncio.sleep(0.05)
    raise AssertionError(f"no newer reload status than {seqs}: {statuses(state_dir)}")


async def trunk_call(caller: Ua, trunk: Ua, call_id: str, hold: float = 1.2) -> None:
    """An outbound call through the trunk on ``call_id``: answered, held, hung up by the caller."""
    dlg = await establish(caller, "0612345678", call_id)
    await asyncio.sleep(hold)
    caller.in_dialog(dlg, "BYE")
    assert (await caller.response(call_id, "BYE", timeout=5)).status == 200
    assert any(getattr(m, "method", "") == "BYE" and m.call_id == call_id for m in trunk.received)


@pytest.mark.parametrize("workers", [1, 2])
async def test_new_rates_and_package_apply_to_new_calls_at_reload(tmp_path: Path, workers: int) -> None:
    trunk = await Ua.open("carrier", "", ("127.0.0.1", 9), host="127.0.0.2")
    config = lifecycle_config(tmp_path, trunk.port)
    caller = None
    try:
        async with serve_process(config, workers) as server:
            trunk.server = server.address
            caller = await Ua.open("1002", password("1002"), server.address)
            await caller.register(timeout=5)
            before = owned_by(0, workers, "before-")
            await trunk_call(caller, trunk, before)
            # A call in progress across the reload keeps the tariff it started with.
            across = owned_by(workers - 1, workers, "across-")
            dlg = await establish(caller, "0612345678", across)

            rates = tmp_path / "rates.csv"
            rates.write_text(rates.read_text().replace(MOBILE, "+336,France mobile,mobile,0.6"))
            config.write_text(config.read_text().replace(
                "p: {rate_table: t, markup: {fixed: 0, percent: 0}, pulse: 60}",
                "p: {rate_table: t, markup: {fixed: 0, percent: 0}, pulse: 1}",
            ))  # fmt: skip
            code, out = await sipcore("reload", "--config", str(config), cwd=tmp_path)
            assert code == 0, out
            assert "reload applied" in out and "rating.packages" in out and "rate_tables" in out, out
            assert "needs a restart" not in out
            done = statuses(server.state_dir)
            assert sorted(done) == (["main"] if workers == 1 else ["worker-0", "worker-1"])
            results = [d["result"] for d in done.values()]
            assert all(r == results[0] for r in results) and results[0]["status"] == "applied"  # type: ignore[index]
            assert all(d["seq"] == 1 for d in done.values())

            caller.in_dialog(dlg, "BYE")
            assert (await caller.response(across, "BYE", timeout=5)).status == 200
            after = [owned_by(w, workers, "after-") for w in range(workers)]  # rated by every worker
            for call_id in after:
                await trunk_call(caller, trunk, call_id)
            server.terminate()
            assert await server.wait() == 0, server.stderr.decode(errors="replace")[-3000:]
    finally:
        trunk.close()
        if caller is not None:
            caller.close()
    rows = {r["call_id"]: r for r in cdr_rows(tmp_path / "state")}
    assert sorted(rows) == sorted([before, across, *after])
    # The carrier's cost is per second of the rate table's price; the package's pulse rounds what is
    # billed (the demo customer is internal: no price, but billed seconds and cost are kept).
    for call_id in (before, across):  # old: 0.02 EUR/min, package pulse 60 s
        row = rows[call_id]
        duration = int(row["duration"])  # type: ignore[call-overload]
        assert duration >= 1 and row["billed_seconds"] == 60, row
        assert abs(int(row["cost_micros"]) - 20_000 * duration / 60) <= 1, row  # type: ignore[call-overload]
    for call_id in after:  # new: 0.6 EUR/min (10,000 micro-EUR a second), package pulse 1 s
        row = rows[call_id]
        duration = int(row["duration"])  # type: ignore[call-overload]
        assert duration >= 1 and row["billed_seconds"] == duration, row
        assert row["cost_micros"] == 10_000 * duration, row


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_half_written_file_is_refused_and_the_running_configuration_kept(
    tmp_path: Path, workers: int
) -> None:
    config = lifecycle_config(tmp_path, 9)
    good = config.read_text()
    phones: list[Ua] = []
    try:
        async with serve_process(config, workers) as server:
            users = ["1001", "1002", "1005", "1007"]  # AORs owned by both workers (test_workers_calls)
            for user in users:
                phones.append(await Ua.open(user, password(user), server.address))
                await phones[-1].register(timeout=5)
            for text, problem in (
                ("", "the file is empty"),
                ("# deploy in progress\n", "the file is empty"),
                (good.split("customers:")[0], "customers is missing"),
            ):
                config.write_text(text)
                code, out = await sipcore("check-config", str(config), cwd=tmp_path)
                assert code == 1 and problem in out, out
                seqs = {name: d["seq"] for name, d in statuses(server.state_dir).items()}
                # as systemd's ExecReload: the pid given (the state_dir is not in a refused file)
                code, out = await sipcore(
                    "reload", "--config", str(config), "--pid", str(server.proc.pid), cwd=tmp_path
                )
                assert code == 1, out
                assert problem in out and "refused" in out, out
                done = await newer_statuses(server.state_dir, seqs)
                assert len(done) == workers
                assert {d["status"] for d in done.values()} == {"refused"}  # the server refused it too
                assert {d["result"]["errors"][0] for d in done.values()} == {
                    next(line for line in out.splitlines() if problem in line)
                }  # type: ignore[index]
                for phone in phones:  # the running configuration goes on: phones register, every worker
                    await phone.register(timeout=5)
            # A good file again, with a password changed and the listen address moved: the password
            # applies now, the address is reported as needing a restart (and the old one still serves).
            port = server.port
            moved = good.replace("1001\", username: \"1001\", password: pw1001",
                                 "1001\", username: \"1001\", password: newpw1001")  # fmt: skip
            moved = moved.replace(f'udp: ["127.0.0.1:{_listen_port(good)}"]', 'udp: ["127.0.0.1:5999"]')
            assert moved.count("newpw1001") == 1 and "5999" in moved
            config.write_text(moved)
            code, out = await sipcore("reload", "--config", str(config), cwd=tmp_path)
            assert code == 0, out
            assert "needs a restart to take effect: server.listen" in out and "customers" in out, out
            done = statuses(server.state_dir)
            assert {tuple(d["result"]["needs_restart"]) for d in done.values()} == {("server.listen",)}  # type: ignore[index]
            assert server.port == port
            alice = phones[0]
            alice.password = "newpw1001"
            await alice.register(timeout=5)
            for phone in phones[1:]:
                await phone.register(timeout=5)
            server.terminate()
            assert await server.wait() == 0
            warned = server.log_events("config_reload_needs_restart")
            assert len(warned) == workers, server.stderr.decode(errors="replace")[-3000:]
            assert all(w["keys"] == ["server.listen"] for w in warned)
    finally:
        for phone in phones:
            phone.close()


def _listen_port(text: str) -> str:
    return text.split('udp: ["127.0.0.1:', 1)[1].split('"', 1)[0]
