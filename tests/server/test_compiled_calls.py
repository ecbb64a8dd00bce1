"""Calls and registrations through the mypyc build (the server's message loop, the proxy adapter,
the call controller, the registrar and its lanes, the digest check and the SIP stack under them:
setup.py) against the same through their Python sources, the reference: each scenario of
tests/server/call_description.py (answered, hung up by the callee, busy, cancelled, a wrong
password, an unknown callee, requests outside a dialog; REGISTER as SIPp sends it and its
retransmission, refreshed, queried, with two Contacts, removed, refused) must send the same messages
to the same places from both."""

from __future__ import annotations

import json

import pytest

from tests.extensions import python_output, require_compiled_build

require_compiled_build()  # a build that could be here and is not (or is stale) fails: `make dev` makes it


def _described(pure: bool) -> dict[str, list[list[object]]]:
    return json.loads(python_output("from tests.server.call_description import main; main()", pure))


@pytest.fixture(scope="module")
def both() -> tuple[dict[str, list[list[object]]], dict[str, list[list[object]]]]:
    return _described(pure=False), _described(pure=True)


def test_the_build_described_the_calls_and_the_sources_the_reference(both) -> None:
    compiled, reference = dict(both[0]), dict(both[1])
    assert reference.pop("loaded") == []
    loaded = compiled.pop("loaded")
    assert len(loaded) == 1
    for module in ("calls/controller.py", "server/proxy_service.py", "registrar/registrar.py",
                   "server/registrar_service.py", "registrar/lane.py", "sipcore/digest.py"):  # fmt: skip
        assert module in loaded[0], (module, loaded)
    assert compiled.keys() == reference.keys()
    # the scenarios did what they are named for (else equal descriptions would say little)
    firsts = {name: [[dest, msg.split("\r\n", 1)[0]] for _, sent in steps for dest, msg in sent]
              for name, steps in reference.items()}  # fmt: skip
    assert ["127.0.0.1:45061", "SIP/2.0 200 OK"] in firsts["answered"]
    assert ["127.0.0.1:45061", "SIP/2.0 486 Busy Here"] in firsts["busy"]
    assert ["127.0.0.1:45061", "SIP/2.0 487 Request Terminated"] in firsts["cancelled"]
    assert firsts["wrong_password"][-1] == ["127.0.0.1:45061", "SIP/2.0 407 Proxy Authentication Required"]
    assert firsts["unknown_callee"][-1][1].startswith("SIP/2.0 4")
    statuses = {name: [msg.split(" ", 2)[1] for _, msg in sent] for name, sent in firsts.items()}
    assert statuses["register_as_sipp_does"] == ["401", "200", "200"]
    assert statuses["register_refresh_query_and_remove"] == ["401", "200"] * 5
    assert statuses["register_refused"] == ["401"] * 6 + ["400", "401", "423"]


def test_every_message_sent_is_the_same_through_the_build_and_the_sources(both) -> None:
    compiled, reference = both
    for name in reference:
        if name == "loaded":
            continue
        assert len(compiled[name]) == len(reference[name]), name
        for ours, ref in zip(compiled[name], reference[name], strict=True):
            assert ours == ref, (name, ref[0].split("\r\n", 1)[0])
