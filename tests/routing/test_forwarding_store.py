"""Forwarding stores: one contract for memory and file; the file survives and reports damage."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing import ForwardingChange, ForwardKind, JsonForwardingStore, MemoryForwardingStore
from routing.forwarding_store import ForwardingFileError


@pytest.fixture(params=["memory", "json"])
def store(request, tmp_path: Path):
    if request.param == "memory":
        return MemoryForwardingStore()
    return JsonForwardingStore(tmp_path / "fw.json")


def test_empty_then_set_then_clear(store) -> None:
    assert dict(store.snapshot()) == {}
    store.apply(ForwardingChange("a1", ForwardKind.BUSY, "2003"))
    assert store.snapshot()["a1"][ForwardKind.BUSY] == "2003"
    store.apply(ForwardingChange("a1", ForwardKind.BUSY, None))
    assert store.snapshot()["a1"][ForwardKind.BUSY] is None


def test_snapshot_is_immutable_and_stable(store) -> None:
    store.apply(ForwardingChange("a1", ForwardKind.PERMANENT, "+33612345678"))
    before = store.snapshot()
    store.apply(ForwardingChange("a1", ForwardKind.PERMANENT, "2002"))
    assert before["a1"][ForwardKind.PERMANENT] == "+33612345678"
    with pytest.raises(TypeError):
        before["a2"] = {}  # type: ignore[index]


def test_file_leaves_no_temporaries(tmp_path: Path) -> None:
    store = JsonForwardingStore(tmp_path / "fw.json")
    for n in range(3):
        store.apply(ForwardingChange(f"a{n}", ForwardKind.NO_ANSWER, "2003"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fw.json"]
    assert len(JsonForwardingStore(tmp_path / "fw.json").snapshot()) == 3


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        '{"format": 2, "accounts": {}}',
        '{"format": 1, "accounts": {"a": {"sideways": "1"}}}',
        '{"format": 1, "accounts": {"a": {"busy": 12}}}',
    ],
)
def test_damaged_file_is_reported_with_its_path(tmp_path: Path, body: str) -> None:
    path = tmp_path / "fw.json"
    path.write_text(body)
    with pytest.raises(ForwardingFileError) as err:
        JsonForwardingStore(path)
    assert err.value.path == path
    assert str(path) in str(err.value)
