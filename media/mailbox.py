"""Voicemail storage: messages per mailbox on disk, with an index that survives crashes and restarts.

Layout under ``root`` (``<server.state_dir>/voicemail``)::

    <box>/index.json          {"format": 1, "messages": [{id, caller, start, duration, new, heard_at}]}
    <box>/<id>.wav            one message (8 kHz mono 16-bit, ``media.wav``)
    <box>/greeting.wav        the account's own greeting, if recorded
    <box>/incoming/<id>.wav   recordings in progress (``recording_path``)

A message id is ``<start ms>-<caller, reduced to [0-9A-Za-z+]>-<n>``: the file name alone says who
called and when, so a recording the index never heard of (a crash between the WAV and the index
write, or in the middle of the recording) is adopted on the next load instead of lost. The index is
rewritten whole, atomically (write, fsync, rename, as ``routing/forwarding_store.py``), after the
WAV is in place; a delete removes the WAV first. So any crash leaves either an entry without WAV
(dropped on load) or a WAV without entry (adopted as new), never a message listed twice or resurrected.

One process owns the store (the media service); nothing here locks against another writer. Time is
always an argument (wall-clock seconds since the epoch): nothing reads a clock.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from media import wav

INDEX_NAME = "index.json"
GREETING_NAME = "greeting.wav"
INCOMING_DIR = "incoming"
_FORMAT = 1
_BOX_RE = re.compile(r"[A-Za-z0-9+_][A-Za-z0-9+_.-]{0,63}")
_ID_RE = re.compile(r"(\d{1,16})-([0-9A-Za-z+]{1,32})-(\d{1,6})")
_UNKNOWN_CALLER = "unknown"


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    caller: str
    start: float  # wall-clock seconds since the epoch when the caller began speaking
    duration: float  # seconds
    new: bool
    path: Path
    heard_at: float | None = None


class MessageCounts(NamedTuple):
    """What message-waiting indication (RFC 3842 ``Voice-Message: new/old``) reports."""

    new: int
    saved: int


class Refusal(enum.Enum):
    FULL = "mailbox full"
    TOO_LONG = "message too long"


class DepositRefused(ValueError):
    """A deposit the limits forbid; the recording was discarded. ``reason`` says which limit."""

    def __init__(self, box: str, reason: Refusal) -> None:
        super().__init__(f"mailbox {box}: {reason.value}")
        self.box = box
        self.reason = reason


class UnknownMessage(KeyError):
    pass


def _caller_tag(caller: str) -> str:
    tag = re.sub(r"[^0-9A-Za-z+]", "", caller)[:32]
    return tag or _UNKNOWN_CALLER


def _parse_id(stem: str) -> tuple[float, str] | None:
    """(start, caller) of a message file name, or None for a name we did not make."""
    m = _ID_RE.fullmatch(stem)
    if not m:
        return None
    caller = m.group(2)
    return int(m.group(1)) / 1000, "" if caller == _UNKNOWN_CALLER else caller


class MailboxStore:
    """All mailboxes under one directory. Each box is loaded (and repaired) on first use."""

    def __init__(
        self, root: str | os.PathLike[str], *, max_messages: int = 100, max_message_seconds: float = 180.0
    ) -> None:
        if max_messages < 1 or max_message_seconds <= 0:
            raise ValueError("limits must be positive")
        self.root = Path(root)
        self.max_messages = max_messages
        self.max_message_seconds = max_message_seconds
        self._boxes: dict[str, list[Message]] = {}

    @classmethod
    def in_state_dir(cls, state_dir: str | os.PathLike[str], **limits: float) -> MailboxStore:
        return cls(Path(state_dir) / "voicemail", **limits)  # type: ignore[arg-type]

    # --- reading -------------------------------------------------------------------------------

    def messages(self, box: str) -> list[Message]:
        """New messages (oldest first), then saved ones (oldest first): the order they are played."""
        return sorted(self._load(box), key=lambda m: (not m.new, m.start, m.id))

    def counts(self, box: str) -> MessageCounts:
        msgs = self._load(box)
        new = sum(1 for m in msgs if m.new)
        return MessageCounts(new, len(msgs) - new)

    def message(self, box: str, msg_id: str) -> Message:
        for m in self._load(box):
            if m.id == msg_id:
                return m
        raise UnknownMessage(f"{box}/{msg_id}")

    def greeting_path(self, box: str) -> Path | None:
        """The account's recorded greeting, or None: the caller then plays the default prompt."""
        path = self._dir(box) / GREETING_NAME
        return path if path.is_file() else None

    def can_deposit(self, box: str) -> bool:
        """Ask before recording, so a full mailbox is announced rather than recorded and refused."""
        return len(self._load(box)) < self.max_messages

    # --- changing ------------------------------------------------------------------------------

    def recording_path(self, box: str, caller: str, start: float) -> Path:
        """Where to record a message in progress: named so that a crash mid-recording loses nothing."""
        incoming = self._dir(box) / INCOMING_DIR
        incoming.mkdir(parents=True, exist_ok=True)
        return incoming / f"{self._new_id(box, caller, start)}.wav"

    def deposit(
        self, box: str, wav_path: str | os.PathLike[str], caller: str, start: float, duration: float
    ) -> Message:
        """Store a finished recording as a new message. The store takes the file: it is moved in,
        or deleted when a limit refuses it (``DepositRefused``)."""
        src = Path(wav_path)
        msgs = self._load(box)
        if not src.is_file():
            raise FileNotFoundError(src)
        refusal = self._refusal(msgs, duration)
        if refusal is not None:
            src.unlink(missing_ok=True)
            raise DepositRefused(box, refusal)
        parsed = _parse_id(src.stem)
        msg_id = src.stem if parsed and src.parent == self._dir(box) / INCOMING_DIR else None
        if msg_id is None or (self._dir(box) / f"{msg_id}.wav").exists():
            msg_id = self._new_id(box, caller, start)
        dest = self._dir(box) / f"{msg_id}.wav"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src != dest:
            shutil.move(src, dest)  # a rename on the same file system
        msg = Message(msg_id, caller, start, duration, True, dest)
        self._save(box, [*msgs, msg])
        return msg

    def mark_heard(self, box: str, msg_id: str, now: float) -> Message:
        """New -> saved (a no-op on a saved message)."""
        msg = self.message(box, msg_id)
        if not msg.new:
            return msg
        heard = replace(msg, new=False, heard_at=now)
        self._save(box, [heard if m.id == msg_id else m for m in self._load(box)])
        return heard

    def delete(self, box: str, msg_id: str) -> None:
        msg = self.message(box, msg_id)
        msg.path.unlink(missing_ok=True)  # first: a crash now leaves an entry without WAV, dropped on load
        self._save(box, [m for m in self._load(box) if m.id != msg_id])

    def set_greeting(self, box: str, wav_path: str | os.PathLike[str]) -> Path:
        """Install a recorded greeting (moved in, replacing the previous one atomically)."""
        dest = self._dir(box) / GREETING_NAME
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(Path(wav_path), dest)
        return dest

    def remove_greeting(self, box: str) -> None:
        (self._dir(box) / GREETING_NAME).unlink(missing_ok=True)

    # --- internals -----------------------------------------------------------------------------

    def _dir(self, box: str) -> Path:
        if not _BOX_RE.fullmatch(box):
            raise ValueError(f"not a mailbox name: {box!r}")
        return self.root / box

    def _refusal(self, msgs: list[Message], duration: float) -> Refusal | None:
        if len(msgs) >= self.max_messages:
            return Refusal.FULL
        if duration > self.max_message_seconds:
            return Refusal.TOO_LONG
        return None

    def _new_id(self, box: str, caller: str, start: float) -> str:
        directory = self._dir(box)
        taken = {m.id for m in self._load(box)}
        base = f"{round(start * 1000)}-{_caller_tag(caller)}"
        n = 0
        while (
            f"{base}-{n}" in taken
            or (directory / f"{base}-{n}.wav").exists()
            or (directory / INCOMING_DIR / f"{base}-{n}.wav").exists()
        ):
            n += 1
        return f"{base}-{n}"

    def _load(self, box: str) -> list[Message]:
        cached = self._boxes.get(box)
        if cached is not None:
            return cached
        directory = self._dir(box)
        msgs, dirty = self._read_index(directory)
        kept = [m for m in msgs if m.path.is_file()]  # an entry without WAV: its delete was interrupted
        dirty |= len(kept) != len(msgs)
        adopted = self._adopt_orphans(directory, kept)
        self._boxes[box] = kept
        if adopted or dirty:
            self._save(box, kept + adopted)
        return self._boxes[box]

    def _read_index(self, directory: Path) -> tuple[list[Message], bool]:
        path = directory / INDEX_NAME
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
                raise ValueError("unknown format")
            msgs = [
                Message(
                    id=str(e["id"]),
                    caller=str(e["caller"]),
                    start=float(e["start"]),
                    duration=float(e["duration"]),
                    new=bool(e["new"]),
                    path=directory / f"{e['id']}.wav",
                    heard_at=None if e.get("heard_at") is None else float(e["heard_at"]),
                )
                for e in raw["messages"]
            ]
            return msgs, False
        except FileNotFoundError:
            return [], False
        except (OSError, ValueError, KeyError, TypeError):
            # Damaged from outside (the rename is atomic): keep it for the operator, rebuild from the WAVs.
            with contextlib.suppress(OSError):
                path.replace(path.with_name(INDEX_NAME + ".bad"))
            return [], True

    def _adopt_orphans(self, directory: Path, kept: list[Message]) -> list[Message]:
        """WAVs the index does not list: finished (in the box) or interrupted (in incoming/)."""
        known = {m.id for m in kept}
        adopted: list[Message] = []
        for leftover in directory.glob(".index-*"):
            leftover.unlink(missing_ok=True)  # an index write interrupted before its rename
        candidates = [(p, False) for p in _wavs(directory)]
        candidates += [(p, True) for p in _wavs(directory / INCOMING_DIR)]
        for path, incoming in candidates:
            parsed = _parse_id(path.stem)
            if parsed is None or path.stem in known:
                continue  # not ours (or the greeting): left alone
            try:
                info = wav.repair(path)
            except (OSError, wav.WavError):
                continue
            if incoming:
                dest = directory / f"{path.stem}.wav"
                if info.data_size == 0 or dest.exists() or self._refusal(kept + adopted, info.duration):
                    path.unlink(missing_ok=True)
                    continue
                path.replace(dest)
                path = dest
            elif self._refusal(kept + adopted, 0.0):
                continue  # over the limit: leave the file, list nothing
            start, caller = parsed
            adopted.append(Message(path.stem, caller, start, info.duration, True, path))
            known.add(path.stem)
        return adopted

    def _save(self, box: str, msgs: list[Message]) -> None:
        directory = self._dir(box)
        directory.mkdir(parents=True, exist_ok=True)
        body = {
            "format": _FORMAT,
            "messages": [
                {
                    "id": m.id,
                    "caller": m.caller,
                    "start": m.start,
                    "duration": m.duration,
                    "new": m.new,
                    "heard_at": m.heard_at,
                }
                for m in msgs
            ],
        }
        fd, tmp = tempfile.mkstemp(prefix=".index-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(body, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, directory / INDEX_NAME)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._boxes[box] = msgs


def _wavs(directory: Path) -> Iterable[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.suffix == ".wav" and p.is_file())
    except FileNotFoundError:
        return []
