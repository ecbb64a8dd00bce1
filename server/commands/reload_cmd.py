"""`sipcore reload`: make the running server re-read its configuration and say what came of it.

Sends SIGHUP to the server (``--pid``, else the pid in ``<state_dir>/sipcore.pid``) and waits until
every serving process (the server, or each worker) has written a newer reload status
(server.reload_status). Exits 0 when every one applied the file, with the same result (what changed,
what needs a restart); 1 when the file was refused (every error printed as FILE:LINE:COL: reason),
the workers disagree (the file changed while they read it: run it again), or no answer came. This is
the unit's ExecReload, so `systemctl reload sipcore` fails on a refused file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from server.reload_status import ProcessStatus, read_pid, read_statuses


def _state_dir(path: str | None) -> tuple[Path, list[str]]:
    """The server's state_dir as the configuration says; read leniently when the file is refused
    (the server keeps running on the old one, whose state_dir a restart alone could change)."""
    from config.loader import ConfigError, load_config

    try:
        return load_config(path).paths.state_dir, []
    except ConfigError as exc:
        problems = [str(p) for p in exc.problems]
    state_dir: Any = None
    try:
        import yaml

        from config.loader import default_config_path

        data = yaml.safe_load(Path(path or default_config_path()).read_text(encoding="utf-8"))
        state_dir = data.get("server", {}).get("state_dir") if isinstance(data, dict) else None
    except Exception:
        state_dir = None
    return Path(os.path.expanduser(str(state_dir or "var"))), problems


def _expected(statuses: dict[str, ProcessStatus]) -> list[str]:
    first = next(iter(statuses.values()))
    return ["main"] if first.worker is None else [f"worker-{i}" for i in range(first.workers)]


def reload(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir) if args.state_dir else None
    local_problems: list[str] = []
    if state_dir is None:
        state_dir, local_problems = _state_dir(args.config)
    pid = args.pid or read_pid(state_dir)
    before = read_statuses(state_dir, pid) if pid else {}
    if not before and local_problems:
        # The file is refused here, where the server's state_dir cannot be read from it: the server
        # (same loader, same file) refuses it too and keeps running; signalled so that it logs it.
        for problem in local_problems:
            print(problem)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)
        print("reload refused: the running configuration is kept", file=sys.stderr)
        return 1
    if not pid:
        print(f"sipcore reload: no server pid (give --pid, or {state_dir / 'sipcore.pid'})", file=sys.stderr)
        return 1
    if not before:
        print(f"sipcore reload: server {pid} wrote no status under {state_dir / 'reload'}", file=sys.stderr)
        return 1
    names = _expected(before)
    seqs = {name: before[name].seq if name in before else 0 for name in names}
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"sipcore reload: no process {pid}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.timeout
    after: dict[str, ProcessStatus] = {}
    while time.monotonic() < deadline:
        after = read_statuses(state_dir, pid)
        if all(name in after and after[name].seq > seqs[name] for name in names):
            break
        time.sleep(0.05)
    else:
        waiting = [n for n in names if n not in after or after[n].seq <= seqs[n]]
        for problem in local_problems:
            print(problem)
        print(
            f"sipcore reload: no answer from {', '.join(waiting)} within {args.timeout:g}s", file=sys.stderr
        )
        return 1
    return _report({name: after[name] for name in names})


def _report(done: dict[str, ProcessStatus]) -> int:
    results = {name: st.result for name, st in done.items()}
    first = next(iter(results.values()))
    refused = {name: r for name, r in results.items() if r.get("status") != "applied"}
    if refused:
        name, result = next(iter(refused.items()))
        for error in result.get("errors", []):
            print(error)
        who = "the server" if list(done) == ["main"] else ", ".join(refused)
        print(f"reload refused by {who}: the running configuration is kept", file=sys.stderr)
        return 1
    if any(r != first for r in results.values()):
        for name, result in results.items():
            print(f"{name}: {result}", file=sys.stderr)
        print(
            "reload: the workers read different files (changed while reloading): run it again",
            file=sys.stderr,
        )
        return 1
    changed = ", ".join(first.get("changed", [])) or "nothing"
    print(f"reload applied: changed: {changed}")
    restart = first.get("needs_restart", [])
    if restart:
        print(f"needs a restart to take effect: {', '.join(restart)}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reload",
        help="make the running server re-read its configuration; fails if it refuses the file",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument(
        "--config", "-c", default=None, help="the server's YAML (default: the embedded example)"
    )
    parser.add_argument("--pid", type=int, help="the server's pid (default: <state_dir>/sipcore.pid)")
    parser.add_argument("--state-dir", help="the server's state_dir (default: from the configuration)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the outcome")
    parser.set_defaults(func=reload)
