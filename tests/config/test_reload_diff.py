"""What a reload may apply: `config.diff` splits the keys that differ into live ones and those that
need a restart (a key it does not know is a restart, never ignored); a half-written file (empty, or
without customers) is refused by the loader and by `sipcore check-config`, at a line; and
`Application.reload()` returns the structured result `sipcore reload` reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from config.diff import LIVE, config_diff
from config.loader import ConfigError, default_config_path, load_config
from server.cli import main

EXAMPLE = default_config_path()


def _copy(tmp_path: Path) -> Path:
    shutil.copy(EXAMPLE.parent / "rates" / "example.csv", tmp_path / "example.csv")
    text = EXAMPLE.read_text().replace("rates/example.csv", "example.csv")
    path = tmp_path / "sipcore.yaml"
    path.write_text(text)
    return path


def test_an_unchanged_file_changes_nothing(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    diff = config_diff(load_config(path), load_config(path))
    assert (diff.changed, diff.needs_restart) == ((), ())


def test_live_keys_and_restart_keys_are_told_apart(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    old = load_config(path)
    text = path.read_text()
    text = text.replace('password: "demo1001pw"', 'password: "other-password"')
    text = text.replace('udp: ["0.0.0.0:5060"]', 'udp: ["0.0.0.0:5062"]')
    text = text.replace("state_dir: var", "state_dir: var2\n  drain_timeout: 5")
    path.write_text(text)
    (tmp_path / "example.csv").write_text((tmp_path / "example.csv").read_text() + "+999,Test,fixed,0.5\n")
    diff = config_diff(old, load_config(path))
    assert diff.changed == ("server.drain_timeout", "customers", "rate_tables")
    assert diff.needs_restart == ("server.listen", "server.state_dir")


def test_sections_a_running_server_cannot_switch_need_a_restart() -> None:
    for key in ("server.listen", "server.workers", "server.metrics", "server.log", "server.state_dir",
                "registrar.location", "cdr", "rating.counters", "proxy.media_service", "media.rtp_ports"):  # fmt: skip
        assert key not in LIVE


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        ("", (1, 1), "the file is empty (no sections at all)"),
        ("# nothing yet\n\n", (1, 1), "the file is empty (no sections at all)"),
        ("server:\n  workers: 1\n", (1, 1), "customers is missing: at least one customer is required"),
        (
            "server:\n  workers: 1\ncustomers: []\n",
            (3, 1),
            "customers is empty: at least one customer is required",
        ),
    ],
)
def test_a_half_written_file_is_refused(
    tmp_path: Path, text: str, where: tuple[int, int], reason: str
) -> None:
    path = tmp_path / "half.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problem = only_problem(info.value)
    assert ((problem.line, problem.column), problem.reason) == (where, reason)


def only_problem(exc: ConfigError):  # type: ignore[no-untyped-def]
    assert len(exc.problems) == 1, exc.problems
    return exc.problems[0]


def test_check_config_refuses_an_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert main(["check-config", str(path)]) == 1
    assert capsys.readouterr().out == f"{path}:1:1: the file is empty (no sections at all)\n"


async def test_reload_returns_and_writes_a_structured_result(tmp_path: Path) -> None:
    from server.app import Application, load_application_config
    from tests.conftest import free_port
    from tests.server.test_reload import _write_config

    port = free_port()
    path = _write_config(tmp_path, "first-password", port)
    app = Application(load_application_config(str(path)))
    await app.start()
    try:
        status = tmp_path / "var" / "reload" / "main.json"
        assert json.loads(status.read_text())["status"] == "started"
        path.write_text(path.read_text().replace("first-password", "second").replace(f":{port}", ":1"))
        result = await app.reload()
        assert (result.ok, result.changed, result.needs_restart) == (True, ("customers",), ("server.listen",))
        written = json.loads(status.read_text())
        assert (written["seq"], written["result"]) == (1, result.as_dict())
        assert app.registrar.registrar.accounts("demo.sipcore.test", "1001").credentials.password == "second"
        good = path.read_text()
        path.write_text("")
        refused = await app.reload()
        assert (refused.ok, refused.errors) == (
            False,
            (f"{path}:1:1: the file is empty (no sections at all)",),
        )
        assert json.loads(status.read_text())["status"] == "refused"
        assert app.registrar.registrar.accounts("demo.sipcore.test", "1001").credentials.password == "second"
        path.write_text(good)
    finally:
        await app.close()
