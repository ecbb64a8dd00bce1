"""SIPp registers against the in-process registrar over UDP and TCP: the team's shared benchmark
scenario (register_auth.xml), a full register/refresh/unregister life, and wrong passwords."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.registrar_sip.conftest import Running, app_running
from tests.sipp.runner import run_sipp

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(90)]

HERE = Path(__file__).parent
SHARED = Path("/work/shared/bench/sipp/register_auth.xml")
USERS = 100  # accounts u10000… in the test config


def users_csv(directory: Path, count: int, password: str | None = None) -> Path:
    """A SIPp injection file like the shared users.csv; ``password`` overrides every password."""
    lines = ["SEQUENTIAL"]
    for n in range(10000, 10000 + count):
        pw = password or f"pwu{n}"
        lines.append(f"u{n};[authentication username=u{n} password={pw}];{pw}")
    path = directory / "users.csv"
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def transport_target(running: Running) -> str:
    return f"127.0.0.1:{running.port}"


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_shared_register_auth_scenario(tmp_path: Path, sipp_binary: str, transport: str) -> None:
    if not SHARED.exists():
        pytest.skip(f"{SHARED} not present")
    async with app_running(tmp_path, sipp_users=USERS) as running:
        users = users_csv(tmp_path, USERS)
        result = await run_sipp(sipp_binary, transport_target(running), str(SHARED), transport, calls=USERS,
                                rate=200, extra=("-inf", str(users)))  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.successful == USERS and result.failed == 0
        assert running.service.store.contact_count() == USERS  # type: ignore[union-attr]
        [binding] = await running.bindings("sip:u10042@demo.sipcore.test")
        assert binding.flow.transport == ("udp" if transport == "u1" else "tcp")


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_register_refresh_unregister_lifecycle(
    tmp_path: Path, sipp_binary: str, transport: str
) -> None:
    async with app_running(tmp_path, sipp_users=USERS) as running:
        users = users_csv(tmp_path, USERS)
        result = await run_sipp(sipp_binary, transport_target(running), str(HERE / "register_lifecycle.xml"),
                                transport, calls=50, rate=100, extra=("-inf", str(users)))  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.successful == 50 and result.failed == 0
        assert running.service.store.contact_count() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_wrong_password_is_challenged_again(tmp_path: Path, sipp_binary: str, transport: str) -> None:
    async with app_running(tmp_path, sipp_users=USERS) as running:
        users = users_csv(tmp_path, USERS, password="wrong")
        result = await run_sipp(sipp_binary, transport_target(running), str(HERE / "wrong_password.xml"),
                                transport, calls=20, rate=100, extra=("-inf", str(users)))  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.successful == 20 and result.failed == 0
        assert running.service.store.contact_count() == 0  # type: ignore[union-attr]
