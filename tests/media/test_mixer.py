"""The mixer: everyone hears the others, never themselves; saturation, mute, missing frames; the
numpy mixer equals the reference exactly (hypothesis)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media import mixer, tones

S = 8  # short frames keep the examples readable; the contract is the same at 160


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def values(frame: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(frame) // 2}h", frame))


MIXERS = [mixer.mix_reference] + ([mixer.mix_numpy] if mixer.HAVE_NUMPY else [])


@pytest.fixture(params=MIXERS, ids=lambda f: f.__name__)
def mix(request):
    return request.param


def test_each_hears_the_sum_of_the_others(mix) -> None:
    a, b, c = pcm(*[100] * S), pcm(*[20] * S), pcm(*[-3] * S)
    out = mix([a, b, c], [False] * 3, S)
    assert [values(f)[0] for f in out] == [17, 97, 120]


def test_saturates_to_int16_once_on_the_exact_sum(mix) -> None:
    hi, lo = pcm(*[30000] * S), pcm(*[-30000] * S)
    out = mix([hi, hi, hi, lo], [False] * 4, S)
    assert values(out[0])[0] == 30000  # 30000 + 30000 - 30000: no clipping midway
    assert values(out[3])[0] == 32767
    out = mix([lo, lo, lo], [False] * 3, S)
    assert values(out[0])[0] == -32768


def test_muted_contributes_nothing_but_still_hears(mix) -> None:
    a, b = pcm(*[500] * S), pcm(*[7] * S)
    out = mix([a, b], [True, False], S)
    assert values(out[0]) == [7] * S
    assert values(out[1]) == [0] * S


def test_missing_frame_is_silence(mix) -> None:
    a = pcm(*range(S))
    out = mix([a, None, None], [False] * 3, S)
    assert values(out[0]) == [0] * S
    assert out[1] == out[2] == a


def test_alone_and_empty_rooms(mix) -> None:
    assert mix([], [], S) == []
    assert mix([pcm(*[9] * S)], [False], S) == [bytes(2 * S)]


def test_wrong_sizes_are_refused(mix) -> None:
    with pytest.raises(ValueError):
        mix([pcm(1, 2)], [False], S)
    with pytest.raises(ValueError):
        mix([pcm(*[0] * S)], [], S)


def test_a_tone_from_one_reaches_the_others_only() -> None:
    tone = tones.sine(1000, 20)
    out = mixer.mix([tone, None, tones.silence(20)], [False, False, False])
    assert out[1] == out[2] == tone
    assert tones.tone_ratio(tones.samples_of(out[1]), 1000) > 0.99
    assert out[0] == tones.silence(20)


sample = st.one_of(st.integers(-32768, 32767), st.sampled_from([-32768, 32767, 0, -1]))
frame = st.one_of(st.none(), st.lists(sample, min_size=S, max_size=S).map(lambda v: pcm(*v)))


@pytest.mark.skipif(not mixer.HAVE_NUMPY, reason="numpy not installed")
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(frame, st.booleans()), max_size=mixer.MAX_PARTICIPANTS))
def test_numpy_equals_reference(room) -> None:
    frames = [f for f, _ in room]
    muted = [m for _, m in room]
    assert mixer.mix_numpy(frames, muted, S) == mixer.mix_reference(frames, muted, S)
