"""Every RFC 4475 / RFC 5118 torture message, handled by the parser as the manifest says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sipcore.errors import SipParseError
from sipcore.message import Request, parse, validate_request, validate_response

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "conformance"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text()) if (CORPUS / "manifest.json").exists() else []


def _outcome(data: bytes) -> tuple[bool, int | None]:
    """(parsed-and-valid, error status) of the parse + validation the server applies."""
    try:
        msg = parse(data)
        if isinstance(msg, Request):
            validate_request(msg)
            msg.contacts  # noqa: B018 - the registrar and proxy read these
        else:
            validate_response(msg)
        return True, None
    except SipParseError as exc:
        return False, exc.status


def test_corpus_is_present() -> None:
    assert len(MANIFEST) == 61, f"conformance corpus not found at {CORPUS}"


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["name"] + "-" + e["rfc_section"] for e in MANIFEST])
def test_message(entry: dict) -> None:  # type: ignore[type-arg]
    data = (CORPUS / entry["file"]).read_bytes()
    ok, status = _outcome(data)
    outcome = entry["outcome"]
    if outcome == "accept":
        assert ok, f"valid message refused with {status}"
    elif outcome == "reject":
        assert not ok, "invalid message accepted"
        parse_level = [c for c in entry["codes"] if c in (400, 505)]
        assert status in parse_level, f"answered {status}, manifest says {entry['codes']}"
    elif outcome == "reject-or-tolerate":
        assert ok or status in entry["codes"]
    else:  # discard: a response, never answered
        assert entry["kind"] == "response"
        assert ok or status is None
