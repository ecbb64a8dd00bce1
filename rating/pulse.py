"""Pulse arithmetic: billed seconds and free-minute coverage (DOMAIN.md's rules, as integers)."""

from __future__ import annotations


def billed_seconds(duration: int, initial: int, subsequent: int) -> int:
    """`initial` if 0 < d <= initial, else initial + ceil((d - initial) / subsequent) x subsequent.

    A zero-second call bills 0 s (nothing was consumed); one second over a boundary bills one
    more whole step.
    """
    if duration <= 0:
        return 0
    if duration <= initial:
        return initial
    return initial + -(-(duration - initial) // subsequent) * subsequent


def free_minutes_needed(duration: int) -> int:
    """Free minutes a call consumes: whole minutes, rounded up (3 min 11 s uses 4)."""
    return -(-duration // 60) if duration > 0 else 0


def split_free(duration: int, free_left: int) -> tuple[int, int]:
    """(free minutes used, seconds left to bill by pulse) for a call against a bundle.

    With enough minutes the whole call is free; otherwise it uses every minute left and the
    remaining seconds (duration - used x 60) are billed by pulse.
    """
    need = -(-duration // 60) if duration > 0 else 0
    if need <= free_left:
        return need, 0
    if free_left <= 0:
        return 0, duration
    return free_left, duration - free_left * 60
