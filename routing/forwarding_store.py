"""Where forwarding set from the phone (feature codes) lives, so it survives restarts.

This is the one edge in ``routing/``: a tiny store behind a two-method interface. Routing itself only
reads ``snapshot()`` (an immutable mapping, replaced on every change, so a decision in progress never
sees half an update). The file store rewrites one small JSON file atomically (write, fsync, rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from routing.feature_codes import ForwardingChange
from routing.model import ForwardKind
from routing.state import Overrides

FILE_NAME = "forwarding.json"
_FORMAT = 1


class ForwardingStore(Protocol):
    def snapshot(self) -> Overrides:
        """Per account id, per kind: target set from the phone, or None when cleared there."""
        ...

    def apply(self, change: ForwardingChange) -> None:
        """Record a change (and persist it, for stores that do)."""
        ...


def _with(current: Overrides, change: ForwardingChange) -> Overrides:
    accounts = {acc: dict(kinds) for acc, kinds in current.items()}
    accounts.setdefault(change.account_id, {})[change.kind] = change.target
    return MappingProxyType({acc: MappingProxyType(kinds) for acc, kinds in accounts.items()})


class MemoryForwardingStore:
    """For tests and throwaway setups: lost on restart."""

    def __init__(self) -> None:
        self._data: Overrides = MappingProxyType({})

    def snapshot(self) -> Overrides:
        return self._data

    def apply(self, change: ForwardingChange) -> None:
        self._data = _with(self._data, change)


class ForwardingFileError(ValueError):
    """The state file is unreadable; carries the path so the operator knows what to fix."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class JsonForwardingStore:
    """One JSON file: ``{"format": 1, "accounts": {"<account id>": {"<kind>": "<target>"|null}}}``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._data = self._load()

    @classmethod
    def in_state_dir(cls, state_dir: str | os.PathLike[str]) -> JsonForwardingStore:
        directory = Path(state_dir)
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / FILE_NAME)

    def snapshot(self) -> Overrides:
        return self._data

    def apply(self, change: ForwardingChange) -> None:
        data = _with(self._data, change)
        self._write(data)
        self._data = data

    def _load(self) -> Overrides:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return MappingProxyType({})
        except (OSError, ValueError) as exc:
            raise ForwardingFileError(self.path, f"cannot read forwarding state: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
            raise ForwardingFileError(self.path, f"not a forwarding state file (format {_FORMAT})")
        accounts: dict[str, MappingProxyType] = {}
        try:
            for account_id, kinds in raw.get("accounts", {}).items():
                parsed = {}
                for kind, target in kinds.items():
                    if target is not None and not isinstance(target, str):
                        raise ValueError(f"target of {account_id}/{kind} must be a string or null")
                    parsed[ForwardKind(kind)] = target
                accounts[str(account_id)] = MappingProxyType(parsed)
        except (AttributeError, ValueError) as exc:
            raise ForwardingFileError(self.path, str(exc)) from exc
        return MappingProxyType(accounts)

    def _write(self, data: Overrides) -> None:
        body = {
            "format": _FORMAT,
            "accounts": {acc: {k.value: t for k, t in kinds.items()} for acc, kinds in data.items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".forwarding-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(body, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
