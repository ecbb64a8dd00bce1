"""`make run`'s --demo-tls: a self-signed pair made under state_dir, and a demo port another program
holds left out with a warning instead of stopping the server."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from server.tls_context import DEMO_WS, demo_secure_settings


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the demo pair")
def test_demo_pair_is_made_and_a_held_port_is_left_out(tmp_path: Path) -> None:
    host, port = DEMO_WS.rsplit(":", 1)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        try:
            holder.bind((host, int(port)))
            holder.listen()
        except OSError:
            pass  # something on this machine holds it already: left out all the same
        settings = demo_secure_settings(str(tmp_path))
    finally:
        holder.close()
    assert settings.ws == []
    assert settings.context is not None
    assert (tmp_path / "tls" / "demo.crt").is_file() and (tmp_path / "tls" / "demo.key").is_file()
