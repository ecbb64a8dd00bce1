"""A real softphone (baresip 1.0, `apt-get install baresip`) registers as 1001 over UDP and TCP, and
unregisters when it quits. Skipped when the binary is absent.

baresip 1.0 (libre) gives up with ENOSYS ("Register: Function not implemented") when a 401 carries a
challenge whose algorithm it does not know, even after an MD5 one it could answer. The registrar
therefore challenges User-Agents listed in ``registrar.md5_only_user_agents`` (default: baresip) with
MD5 only; one test checks the default configuration, the others configure ``[MD5]`` explicitly."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path

import pytest

from registrar.location import Binding
from sipcore.waiting import within
from tests.conftest import free_port
from tests.registrar_sip.conftest import Running, app_running

pytestmark = pytest.mark.timeout(60)

MODULES = Path("/usr/lib/baresip/modules")


def baresip_dir(directory: Path, server_port: int, transport: str) -> Path:
    home = directory / f"baresip-{transport}"
    home.mkdir()
    (home / "config").write_text(
        f"poll_method\t\tepoll\nsip_listen\t\t127.0.0.1:{free_port()}\nmodule_path\t\t{MODULES}\n"
        "net_interface\t\t127.0.0.1\nmodule\t\t\tg711.so\nmodule_app\t\taccount.so\n",
        encoding="ascii",
    )
    (home / "accounts").write_text(
        f"<sip:1001@127.0.0.1:{server_port};transport={transport}>;auth_pass=demo1001pw;regint=600\n",
        encoding="ascii",
    )
    return home


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_baresip_registers_and_unregisters(tmp_path: Path, transport: str) -> None:
    async with app_running(tmp_path / "server", digest_algorithms="[MD5]") as registrar:
        await _register_and_quit(registrar, tmp_path, transport)


async def test_baresip_registers_with_the_default_challenges(tmp_path: Path) -> None:
    async with app_running(tmp_path / "server") as registrar:
        await _register_and_quit(registrar, tmp_path, "udp", wait=4)


async def _register_and_quit(registrar: Running, tmp_path: Path, transport: str, wait: float = 10) -> None:
    binary = shutil.which("baresip")
    if binary is None:
        pytest.skip("baresip is not installed (apt-get install baresip)")
    home = baresip_dir(tmp_path, registrar.port, transport)
    proc = await asyncio.create_subprocess_exec(
        binary, "-f", str(home), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        bindings: list[Binding] = []
        while not bindings and loop.time() < deadline and proc.returncode is None:
            await asyncio.sleep(0.1)
            bindings = await registrar.bindings()
        assert len(bindings) == 1, "baresip did not register"
        [b] = bindings
        assert b.flow.transport == transport
        assert b.user_agent.lower().startswith("baresip")
        assert 0 < b.expires_at - time.time() <= 600
        proc.send_signal(signal.SIGTERM)  # baresip sends REGISTER Expires: 0 on the way out
        deadline = loop.time() + 10
        while bindings and loop.time() < deadline:
            await asyncio.sleep(0.1)
            bindings = await registrar.bindings()
        assert bindings == [], "baresip's unregister did not remove the binding"
    finally:
        if proc.returncode is None:
            proc.kill()
        out, _ = await within(proc.communicate(), 10)
        print(out.decode(errors="replace")[-3000:])  # shown by pytest when the test fails
