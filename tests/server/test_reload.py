"""SIGHUP reload: a good file swaps the accounts in; a bad file is refused and the old config kept."""

from __future__ import annotations

from pathlib import Path

from config.loader import default_config_path
from server.app import Application, load_application_config
from tests.conftest import free_port


def _write_config(tmp_path: Path, password: str, port: int) -> Path:
    text = default_config_path().read_text()
    text = text.replace('password: "demo1001pw"', f'password: "{password}"')
    text = text.replace('udp: ["0.0.0.0:5060"]', f'udp: ["127.0.0.1:{port}"]')
    text = text.replace('tcp: ["0.0.0.0:5070"]', f'tcp: ["127.0.0.1:{port}"]')
    text = text.replace("metrics: 127.0.0.1:9090", "metrics: null")
    text = text.replace("state_dir: var", f"state_dir: {tmp_path / 'var'}")
    text = text.replace("rates/example.csv", str(default_config_path().parent / "rates" / "example.csv"))
    path = tmp_path / "sipcore.yaml"
    path.write_text(text)
    return path


async def test_reload_swaps_accounts_and_refuses_a_bad_file(tmp_path: Path) -> None:
    port = free_port()
    path = _write_config(tmp_path, "first-password", port)
    app = Application(load_application_config(str(path)))
    await app.start()
    try:
        registrar = app.registrar.registrar
        account = registrar.accounts("demo.sipcore.test", "1001")
        assert account.credentials.password == "first-password"

        _write_config(tmp_path, "second-password", port)
        assert (await app.reload()).ok
        new_registrar = app.registrar.registrar
        assert new_registrar is not registrar
        assert new_registrar.accounts("demo.sipcore.test", "1001").credentials.password == "second-password"
        assert new_registrar.guard is not None

        path.write_text(path.read_text().replace("registrar:", "registrar:\n  bogus_key: 1", 1))
        assert not (await app.reload()).ok
        assert app.registrar.registrar is new_registrar  # the running configuration is kept
    finally:
        await app.close()


async def test_reload_seeds_opening_balances_of_new_and_edited_customers(tmp_path: Path) -> None:
    """Memory counters: what a restart would read (opening balance + ledger), without the restart."""
    from tests.proxy_sip.conftest import platform

    async with platform(tmp_path) as running:
        app = running.app
        path = Path(app.loaded.path)
        counters = app.billing.counters
        assert await counters.balance("pre") == 20_000  # 0.02 EUR
        text = path.read_text().replace("initial: 0.02}", "initial: 1.5}")
        extra = (
            "  - id: newco\n    name: New Co\n    reference: CUST-0009\n    country: FR\n"
            "    domains: [new.sipcore.test]\n    balance: {mode: HARD, initial: 3}\n"
            "    default_package: p\n    accounts:\n"
            '      - {extension: "100", username: "100", password: pw100}\n'
        )
        path.write_text(text.replace("customers:\n", "customers:\n" + extra, 1))
        result = await app.reload()
        assert result.ok and "customers" in result.changed, result
        assert await counters.balance("pre") == 1_500_000
        assert await counters.balance("newco") == 3_000_000
        assert app.billing.rater.setup.customers["newco"].id == "newco"  # new calls rate with the new setup
