"""The dashboard and the alert rules against real parts (Debian's `prometheus` package): `promtool`
checks and unit-tests the rules; a real Prometheus scrapes `sipcore serve` (1 and 2 workers) during
a short SIPp run (OPTIONS, REGISTERs, calls out through the trunk to a SIPp carrier), every expression
of ops/grafana/sipcore.json returns data through its HTTP API, every metric the rules name is
exported, and the counts are what SIPp sent."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sipcore.waiting import within
from tests.conftest import free_port
from tests.proxy_sip import sipp_party
from tests.proxy_sip.configs import TRUNK_HOST, password, write_config
from tests.server.workers_helpers import metric, serve
from tests.sipp.runner import run_sipp

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
RULES_TEST = ROOT / "ops" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "sipcore.json"
OPTIONS = 200
CALLS = 4
PHONES = ("1002", "1003", "1005")


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (apt-get install prometheus)")
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return path


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in data["panels"] for t in p["targets"]]


def rule_exprs() -> list[str]:
    import yaml

    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [r["expr"] for g in data["groups"] for r in g["rules"]]


_FUNCS = {"sum", "rate", "increase", "delta", "max_over_time", "histogram_quantile", "by", "le", "min",
          "max", "and", "clamp_min", "offset"}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (identifiers followed by ``{``, ``[`` or not by ``(``)."""
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "{}", expr)
    names = set()
    for m in re.finditer(r"\b([a-z_][a-z0-9_]*)\b\s*(\(?)", expr):
        name, paren = m.group(1), m.group(2)
        if paren or name in _FUNCS or re.fullmatch(r"\d+[smhd]", name):
            continue
        if re.search(rf"by \([^)]*\b{name}\b", expr):  # a grouping label
            continue
        names.add(name)
    return names


def test_metric_names_are_read_from_expressions() -> None:
    expr = 'sum by (le, operation) (rate(sipcore_rating_duration_seconds_bucket{x="a"}[5m])) / up'
    assert metric_names(expr) == {"sipcore_rating_duration_seconds_bucket", "up"}


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = _binary("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout
    tested = subprocess.run([promtool, "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent,
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr


class Prometheus:
    def __init__(self, binary: str, directory: Path, target: str) -> None:
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{RULES}']\n"
            f"scrape_configs:\n  - job_name: sipcore\n    static_configs: [{{targets: ['{target}']}}]\n",
            encoding="utf-8",
        )
        self.args = [
            binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
        ]  # fmt: skip
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(100):
            try:
                await self.get("/-/ready")
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise AssertionError("prometheus did not become ready")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await within(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def get(self, path: str) -> Any:
        def fetch() -> Any:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                body = resp.read()
            return json.loads(body) if path.startswith("/api/") else body

        return await asyncio.to_thread(fetch)

    async def query(self, expr: str) -> list[dict[str, Any]]:
        answer = await self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    async def value(self, expr: str) -> float:
        result = await self.query(expr)
        return float(result[0]["value"][1]) if result else float("nan")


async def _traffic(sipp: str, tmp_path: Path, port: int, trunk_port: int) -> None:
    target = f"127.0.0.1:{port}"
    options = await run_sipp(sipp, target, "options.xml", calls=OPTIONS, rate=200, timeout=20)
    assert options.returncode == 0 and options.successful == OPTIONS, options.stderr[-2000:]
    for user in PHONES:
        await sipp_party.register(sipp, tmp_path / "reg", target, user, password(user), free_port())
    carrier = await sipp_party.start(sipp, tmp_path / "carrier", "trunk_uas.xml", host=TRUNK_HOST,
                                     port=trunk_port, calls=CALLS,
                                     expect={"NUMBER": "+33612345678", "CALLER": "+33184000001"})  # fmt: skip
    inf = sipp_party.credentials(tmp_path, "1001", password("1001"))
    uac = await sipp_party.start(sipp, tmp_path / "uac", "uac.xml", target, "-inf", str(inf), "-s", "0612345678",
                                 "-l", "1", port=free_port(), calls=CALLS, expect={"PROXY": target})  # fmt: skip
    assert await uac.result() == 0, uac.errors()
    assert await carrier.result() == 0, carrier.errors()
    # one call that fails: an extension nobody has (the caller's SIPp gives up on the answer)
    lost = await sipp_party.start(sipp, tmp_path / "lost", "uac.xml", target, "-inf", str(inf), "-s", "1099",
                                  port=free_port(), calls=1, expect={"PROXY": target})  # fmt: skip
    assert await lost.result() != 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("workers", [1, 2])
async def test_prometheus_scrapes_the_whole_server(workers: int, sipp_binary: str, tmp_path: Path) -> None:
    binary = _binary("prometheus")
    port, trunk_port = free_port(), free_port()
    config = write_config(tmp_path / "app", port, trunk_port)
    try:
        async with serve(config, workers=workers, port=port) as served:
            prom = Prometheus(binary, tmp_path / "prom", f"127.0.0.1:{served.metrics_port}")
            await prom.start()
            try:
                await _traffic(sipp_binary, tmp_path, port, trunk_port)
                _, tcp = await asyncio.open_connection("127.0.0.1", port)  # one SIP TCP connection held open
                for _ in range(40):  # the registry gauges are refreshed every second (registrar sweep)
                    text = await served.metrics()
                    contacts = metric(text, "sipcore_registered_contacts")
                    if contacts >= len(PHONES) and metric(text, "sipcore_tcp_connections") >= 1:
                        break
                    await asyncio.sleep(0.1)
                assert metric(text, "sipcore_tcp_connections") == 1
                tcp.close()
                # the server's own figures: what SIPp sent, whichever worker read or owned it
                assert metric(text, "sipcore_requests_total", method="OPTIONS") == OPTIONS
                assert metric(text, "sipcore_register_total") == 2 * len(PHONES)  # 401, then 200
                assert metric(text, "sipcore_register_total", status="200") == len(PHONES)
                assert metric(text, "sipcore_register_duration_seconds_count") == 2 * len(PHONES)
                assert metric(text, "sipcore_registered_contacts") == len(PHONES)  # not once per worker
                answered = {"direction": "outbound", "disposition": "answered"}
                assert metric(text, "sipcore_calls_finished_total", **answered) == CALLS
                assert (
                    metric(text, "sipcore_trunk_calls_total", trunk="carrier", disposition="answered")
                    == CALLS
                )
                assert metric(text, "sipcore_calls_finished_total", disposition="answered") == CALLS
                assert metric(text, "sipcore_calls_finished_total") == CALLS + 1  # and the failed one
                assert metric(text, "sipcore_call_setup_seconds_count", stage="ringing") == CALLS
                assert metric(text, "sipcore_call_setup_seconds_count", stage="answer") == CALLS
                assert metric(text, "sipcore_rating_duration_seconds_count", operation="settle") == CALLS + 1
                assert metric(text, "sipcore_worker_up") == workers
                cpu = [ln for ln in text.splitlines() if ln.startswith("process_cpu_seconds_total")]
                assert len(cpu) == workers, cpu  # one per process, kept apart by the worker label
                assert 'sipcore_build_info{c_extensions="' in text
                # Prometheus's view, once a scrape after the traffic has landed
                expr = 'sum(sipcore_requests_total{method="OPTIONS"})'
                for _ in range(50):
                    if await prom.value("sum(sipcore_calls_finished_total)") == CALLS + 1:
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(1.5)  # at least two samples after the traffic, for rate()
                assert await prom.value(expr) == OPTIONS
                assert await prom.value("sum(sipcore_register_total)") == 2 * len(PHONES)
                assert await prom.value('sum(sipcore_trunk_calls_total{trunk="carrier"})') == CALLS
                empty = [e for e in dashboard_exprs() if not await prom.query(e)]
                assert not empty, f"dashboard expressions without data: {empty}"
                named = {n for e in dashboard_exprs() + rule_exprs() for n in metric_names(e)}
                assert "sipcore_trunk_calls_total" in named and "up" in named
                missing = [n for n in sorted(named) if not await prom.query(f'count({{__name__="{n}"}})')]
                assert not missing, f"metrics named by the dashboard or rules but not exported: {missing}"
                for e in rule_exprs():
                    await prom.query(e)  # evaluates (asserts success)
                rules = await prom.get("/api/v1/rules")
                health = {r["name"]: r["health"] for g in rules["data"]["groups"] for r in g["rules"]}
                assert len(health) == 8 and set(health.values()) <= {"ok", "unknown"}, health
            finally:
                await prom.stop()
                await sipp_party.stop_all()
    finally:
        await sipp_party.stop_all()


@pytest.mark.timeout(60)
async def test_logs_for_fail2ban_and_call_lines_behind_the_switch(sipp_binary: str, tmp_path: Path) -> None:
    """``server.log.calls: true``: call_started / call_ended at info; always: one auth_failed line per
    failed authentication (source address, user) and one source_banned line per ban (workers: 2)."""
    port, trunk_port = free_port(), free_port()
    config = write_config(tmp_path / "app", port, trunk_port)
    text = config.read_text(encoding="utf-8")
    for old, new in (("log: {format: json, level: warning}", "log: {format: json, level: info, calls: true}"),
                     ("guard: {failure_threshold: 50,", "guard: {whitelist: [], failure_threshold: 3,")):  # fmt: skip
        assert old in text
        text = text.replace(old, new)
    config.write_text(text, encoding="utf-8")
    target = f"127.0.0.1:{port}"
    async with serve(config, workers=2, port=port) as served:
        carrier = await sipp_party.start(sipp_binary, tmp_path / "carrier", "trunk_uas.xml", host=TRUNK_HOST,
                                         port=trunk_port, expect={"NUMBER": "+33612345678", "CALLER": "+33184000001"})  # fmt: skip
        inf = sipp_party.credentials(tmp_path, "1001", password("1001"))
        uac = await sipp_party.start(sipp_binary, tmp_path / "uac", "uac.xml", target, "-inf", str(inf),
                                     "-s", "0612345678", port=free_port(), expect={"PROXY": target})  # fmt: skip
        assert await uac.result() == 0, uac.errors()
        assert await carrier.result() == 0, carrier.errors()
        bad = sipp_party.credentials(tmp_path / "bad", "1002", "wrong-password")
        for n in range(3):  # the third failure bans 127.0.0.1
            reg = await sipp_party.start(sipp_binary, tmp_path / f"bad{n}", "register_auth.xml", target,
                                         "-inf", str(bad), port=free_port(), timeout=3)  # fmt: skip
            assert await reg.result() != 0
        await served.stop()
    await sipp_party.stop_all()
    # every line whole, whichever worker wrote it (JSON for a SIEM)
    lines = [json.loads(ln) for ln in served.stderr.decode().splitlines() if ln.startswith("{")]
    events = [ln["event"] for ln in lines]
    started = [ln for ln in lines if ln["event"] == "call_started"]
    ended = [ln for ln in lines if ln["event"] == "call_ended"]
    assert len(started) == 1 and started[0]["level"] == "info" and started[0]["trunk"] == "carrier"
    assert len(ended) == 1 and ended[0]["disposition"] == "answered" and ended[0]["trunk"] == "carrier"
    failed = [ln for ln in lines if ln["event"] == "auth_failed"]
    assert len(failed) == 3, events
    assert all(ln["source"] == "127.0.0.1" and ln["user"] == "1002" for ln in failed), failed
    bans = [ln for ln in lines if ln["event"] == "source_banned"]
    assert len(bans) == 1 and bans[0]["source"] == "127.0.0.1", events
