"""CallEnded.shifted: the proxy moves an ended call from the controller's monotonic clock to wall-clock
time for the journal and the CDR; every other fact goes through unchanged."""

from __future__ import annotations

import dataclasses

from calls.call_ended import CallEnded

TIMES = {"start", "answer", "end"}


def _event(answer: float | None) -> CallEnded:
    return CallEnded(
        "cid", "f1", "forwarded", "acme", "acme-2002", "acme-2003", "+331", "2002", "+332", "acme-2003", "+333",
        100.0, answer, 160.5, "answered", 200, "callee", True, "reason", (("acme", "acme-2003", 5),),
    )  # fmt: skip


def test_shifted_moves_the_times_and_keeps_every_other_field() -> None:
    e = _event(101.25)
    moved = e.shifted(1_790_000_000.0)
    assert (moved.start, moved.answer, moved.end) == (1_790_000_100.0, 1_790_000_101.25, 1_790_000_160.5)
    for field in dataclasses.fields(CallEnded):  # a field added later is carried, or this fails
        if field.name not in TIMES:
            assert getattr(moved, field.name) == getattr(e, field.name), field.name
    assert moved.duration == e.duration


def test_shifted_keeps_an_unanswered_call_unanswered() -> None:
    assert _event(None).shifted(5.0).answer is None
