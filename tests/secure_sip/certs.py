"""Test certificates made with the ``openssl`` command: a CA, a server certificate it signed for
localhost / 127.0.0.1, and a second CA nobody trusts (a client certificate signed by it is a bad one)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    rogue_cert: Path  # signed by an untrusted CA
    rogue_key: Path


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _run("req", "-x509", *ec, "-days", "2", "-subj", "/CN=sipcore test CA", "-keyout", "ca.key", "-out", "ca.crt",
         cwd=directory)  # fmt: skip
    _run("req", *ec, "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr", cwd=directory)
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
         "-extfile", "san.ext", "-out", "server.crt", cwd=directory)  # fmt: skip
    _run("req", "-x509", *ec, "-days", "2", "-subj", "/CN=rogue", "-keyout", "rogue.key", "-out", "rogue.crt",
         cwd=directory)  # fmt: skip
    return Pki(directory / "ca.crt", directory / "server.crt", directory / "server.key",
               directory / "rogue.crt", directory / "rogue.key")  # fmt: skip
