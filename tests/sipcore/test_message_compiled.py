"""The mypyc build (setup.py: the SIP stack's per-message code, the request checks and the digest
check in sipcore/_compiled/, the server's message loop, proxy adapter, registrar adapter and call
journal in server/_compiled/, the call controller in calls/_compiled/, the registrar and its lanes in
registrar/_compiled/, the location store in registrar/location/_compiled/, the call plan and the
outgoing decision in routing/_compiled/) against its Python
sources: the build is in use where it can be made, is left out as a whole when one source changes or
with SIPCORE_PURE_PYTHON=1, and reads every message as the sources do (the sources are the
reference; `make test` also runs tests/sipcore/, tests/calls/, the registrar lanes' and the location
store's tests on them alone, tests/server/test_compiled_calls.py holds calls and registrations
through the build to the same through the sources, tests/registrar/test_location_compiled.py
the location store's answers and replication, tests/routing/test_plan_compiled.py the call plans'
actions)."""

from __future__ import annotations

import base64
import json
import random
import subprocess
from pathlib import Path

import calls.controller
import registrar.lane
import registrar.location.memory
import registrar.location.replicated
import registrar.location.rules
import registrar.registrar
import routing.outgoing
import routing.plan
import routing.plan_nodes
import server.call_journal
import server.proxy_service
import server.registrar_service
import server.sip_server
import sipcore
import sipcore.digest
import sipcore.message
import sipcore.transaction
from fuzz.seeds import messages
from sipcore import speedups
from tests.extensions import ROOT, python_output, require_compiled_build
from tests.sip_mutations import mutate
from tests.sipcore.message_description import describe_all

COMPILED = Path(sipcore.__file__).parent / "_compiled"
require_compiled_build()  # a build that could be here and is not (or is stale) fails: `make dev` makes it


def test_the_build_is_what_runs() -> None:
    record = json.loads((COMPILED / "sources.json").read_text())["sources"]
    assert {
        "sipcore/message.py",
        "server/sip_server.py",
        "server/proxy_service.py",
        "calls/controller.py",
        "registrar/registrar.py",
        "server/registrar_service.py",
        "registrar/location/memory.py",
        "registrar/location/replicated.py",
        "routing/plan.py",
        "server/call_journal.py",
    } <= set(record)
    for module in (
        sipcore.message,
        sipcore.transaction,
        sipcore.digest,
        server.sip_server,
        server.proxy_service,
        server.registrar_service,
        calls.controller,
        registrar.registrar,
        registrar.lane,
        registrar.location.memory,
        registrar.location.replicated,
        registrar.location.rules,
        routing.plan,
        routing.plan_nodes,
        routing.outgoing,
        server.call_journal,
    ):
        origin = module.__spec__.origin  # (mypyc sets __file__ from its group's runtime)
        assert origin.endswith(".so") and "/_compiled/" in origin, origin
    assert f"compiled: {', '.join(sorted(record))}" in speedups.LOADED, speedups.LOADED


def test_the_switch_the_fuzzer_and_an_edited_source_leave_the_build_out(tmp_path: Path) -> None:
    where = (  # a module of a top-level package, a package's path, a sub-package's path
        "import sipcore.message, calls, registrar.location as r, sipcore.speedups as s; "
        "print(sipcore.message.__spec__.origin, calls.__path__[0], r.__path__[0], s.LOADED)"
    )
    built = python_output(where, pure=False).split()
    assert ".so" in built[0] and built[2] == str(ROOT / "registrar" / "location" / "_compiled"), built
    printed = python_output(where, pure=True)
    assert printed.split()[0].endswith("sipcore/message.py") and "_compiled" not in printed, printed
    fuzzed = (  # what fuzz/run.py does before it loads a target
        "import sipcore.speedups as s; s.sources_only(); import sipcore.message, calls; "
        "import registrar.location as r; "
        "print(sipcore.message.__spec__.origin, calls.__path__[0], r.__path__[0], s.LOADED)"
    )
    printed = python_output(fuzzed, pure=False)
    assert printed.split()[0].endswith("sipcore/message.py") and "compiled" not in printed, printed
    assert printed.split()[2] == str(ROOT / "registrar" / "location"), printed
    # a copy of the group's packages: used as built, then left to its sources as a whole once one
    # module of another package (calls/controller.py) differs from the recorded one
    for package in ("sipcore", "server", "calls", "registrar", "routing"):
        subprocess.run(["cp", "-r", str(ROOT / package), str(tmp_path / package)], check=True)
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); {where}"
    printed = python_output(code, pure=False)
    assert printed.split()[0].startswith(str(tmp_path / "sipcore" / "_compiled")), printed
    assert printed.split()[1] == str(tmp_path / "calls" / "_compiled"), printed
    assert printed.split()[2] == str(tmp_path / "registrar" / "location" / "_compiled"), printed
    controller = tmp_path / "calls" / "controller.py"
    controller.write_text(controller.read_text() + "\n# edited after the build\n")
    printed = python_output(code, pure=False)
    assert printed.split()[:3] == [
        str(tmp_path / "sipcore" / "message.py"),
        str(tmp_path / "calls"),
        str(tmp_path / "registrar" / "location"),
    ], printed
    assert "compiled" not in printed


def test_the_build_reads_every_message_as_the_sources_do() -> None:
    """Seeds (the RFC 4475/5118 corpus, SIPp's messages, the fuzz seeds), the parser's fuzz
    regressions and 3,000 seeded mutations: parse, validation, every accessor the server reads,
    serialisation, kept copies, the error answers. Described here by the build and in a process
    of Python sources; every description must be equal."""
    seeds = messages()
    regressions = sorted((ROOT / "fuzz" / "regressions" / "parser").glob("*"))
    inputs = [*seeds, *(p.read_bytes() for p in regressions if p.is_file())]
    rng = random.Random(20261206)
    inputs += [mutate(rng, rng.choice(seeds)) for _ in range(3000)]
    compiled = json.loads(json.dumps(describe_all(inputs)))
    code = "from tests.sipcore.message_description import main; main()"
    reference = json.loads(
        python_output(code, pure=True, stdin=json.dumps([base64.b64encode(x).decode() for x in inputs]))
    )
    assert len(reference) == len(compiled) == len(inputs)
    outcomes = {d[0] for d in compiled}
    assert "parsed" in outcomes and "refused" in outcomes and "crashed" not in outcomes, outcomes
    for data, ours, ref in zip(inputs, compiled, reference, strict=True):
        assert ours == ref, data
