"""The mypyc build of the SIP stack's per-message code (setup.py, sipcore/_compiled/) against its
Python sources: the build is in use where it can be made, is left out when a source changes or with
SIPCORE_PURE_PYTHON=1, and reads every message as the sources do (the sources are the reference;
`make test` also runs tests/sipcore/ on them alone, the transaction layer's tests among them)."""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import sipcore
import sipcore.message
import sipcore.transaction
from fuzz.seeds import messages
from sipcore import speedups
from tests.extensions import require_extension
from tests.sip_mutations import mutate
from tests.sipcore.message_description import describe_all

ROOT = Path(__file__).resolve().parents[2]
COMPILED = Path(sipcore.__file__).parent / "_compiled"
IN_USE = str(COMPILED) in sipcore.__path__
if not IN_USE:  # a build that could be here and is not (or is stale) fails: `make dev` makes it
    require_extension(None, "the mypyc build of sipcore (sipcore/_compiled/)")


def _python(code: str, pure: bool, stdin: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if k != "SIPCORE_PURE_PYTHON"}
    if pure:
        env["SIPCORE_PURE_PYTHON"] = "1"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, input=stdin, capture_output=True,
                         text=True, timeout=300, check=True)  # fmt: skip
    return out.stdout


def test_the_build_is_what_runs() -> None:
    assert sipcore.message.__file__.endswith(".so"), sipcore.message.__file__
    assert sipcore.transaction.__file__.endswith(".so"), sipcore.transaction.__file__
    assert any(name.startswith("sipcore compiled: ") for name in speedups.LOADED), speedups.LOADED


def test_the_switch_the_fuzzer_and_an_edited_source_leave_the_build_out(tmp_path: Path) -> None:
    where = "import sipcore.message, sipcore.speedups as s; print(sipcore.message.__file__, s.LOADED)"
    assert ".so" in _python(where, pure=False)
    assert _python(where, pure=True).split()[0].endswith("sipcore/message.py")
    fuzzed = (  # what fuzz/run.py does before it loads a target
        "import sipcore, sipcore.speedups as s; s.sources_only(sipcore); import sipcore.message; "
        "print(sipcore.message.__file__, s.LOADED)"
    )
    printed = _python(fuzzed, pure=False)
    assert printed.split()[0].endswith("sipcore/message.py") and "compiled" not in printed, printed
    # a copy of the package whose uri.py differs from the recorded one: the sources decide
    copy = tmp_path / "sipcore"
    subprocess.run(["cp", "-r", str(Path(sipcore.__file__).parent), str(copy)], check=True)
    (copy / "uri.py").write_text((copy / "uri.py").read_text() + "\n# edited after the build\n")
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); {where}"
    printed = _python(code, pure=False)
    assert printed.split()[0] == str(copy / "message.py"), printed
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
        _python(code, pure=True, stdin=json.dumps([base64.b64encode(x).decode() for x in inputs]))
    )
    assert len(reference) == len(compiled) == len(inputs)
    outcomes = {d[0] for d in compiled}
    assert "parsed" in outcomes and "refused" in outcomes and "crashed" not in outcomes, outcomes
    for data, ours, ref in zip(inputs, compiled, reference, strict=True):
        assert ours == ref, data
