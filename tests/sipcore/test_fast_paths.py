"""Differential tests of the parsers' fast paths: whatever input a fast path accepts, the general
(grammar-complete) path must accept with the same result; what it declines goes to the general path.

Inputs are drawn both from SIP-shaped templates with random pieces (mostly well formed, so the fast
paths are exercised) and from raw strings over the characters that matter to the grammar."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore.errors import SipParseError
from sipcore.headers import _VIA_PLAIN, Via

SETTINGS = settings(max_examples=3000, deadline=None)

# pieces, with the characters that trip grammars: whitespace, quotes, brackets, separators
_NASTY = st.sampled_from(
    [" ", "\t", '"', "<", ">", ";", ",", ":", "=", "[", "]", "@", "-", ".", "%", "\\", "?"]
)
_ALNUM = st.text("abcXYZ019", min_size=1, max_size=6)
_PIECE = st.one_of(
    _ALNUM, _NASTY, st.sampled_from(["", "127.0.0.1", "[::1]", "host.example", "5060", "99999"])
)


def _outcome(fn, text: str):  # type: ignore[no-untyped-def]
    try:
        return ("ok", fn(text))
    except SipParseError as exc:
        return ("error", exc.reason)


def _via_fields(v: Via) -> tuple[object, ...]:
    return (v.transport, v.host, v.port, v.params, str(v))


_VIA_TEXT = st.builds(
    lambda proto, transport, host, port, params: f"{proto}{transport} {host}{port}{params}",
    st.sampled_from(["SIP/2.0/", "SIP/2.0/", "sip/2.0/", "SIP / 2.0 / ", "SIP/3.0/"]),
    st.sampled_from(["UDP", "udp", "TCP", "TLS", "X-1"]),
    st.one_of(
        st.sampled_from(["127.0.0.1", "host.example", "a", "-x", "x-", "a..b", "[::1]", "h_o"]), _ALNUM
    ),
    st.sampled_from(["", ":5060", ":0", ":65535", ":65536", ":99999", ":123456", " : 5060", ":"]),
    st.lists(
        st.tuples(
            st.sampled_from(["branch", "rport", "received", "x!%*", "", "b r"]),
            st.one_of(st.none(), st.text("abz09.:[]-_", max_size=8), _PIECE),
        ),
        max_size=4,
    ).map(lambda ps: "".join(f";{k}" if v is None else f";{k}={v}" for k, v in ps)),
)


@SETTINGS
@given(st.one_of(_VIA_TEXT, st.lists(_PIECE, max_size=8).map("".join).map(lambda t: "SIP/2.0/UDP " + t)))
def test_via_fast_path_agrees_with_the_grammar(text: str) -> None:
    general = _outcome(Via.parse_general, text)
    fast = _outcome(Via.parse, text)
    if _VIA_PLAIN(text) is not None:
        assert general[0] == "ok" or "port out of range" in str(general[1]), (text, general)
    if general[0] == "ok" and fast[0] == "ok":
        assert _via_fields(fast[1]) == _via_fields(general[1]), text
    else:
        assert fast == general, text


_URI_REST = st.builds(
    lambda user, host, port, params, tail: f"{user}{host}{port}{params}{tail}",
    st.sampled_from(["", "alice@", "u10000@", "+33612@", "a%20b@", "a:pw@", "a;b@", "@", "a@b@", "a?x@"]),
    st.one_of(
        st.sampled_from(["127.0.0.1", "host.example", "a", "-x", "x-", "a..b", "[::1]", "h_o", ""]), _ALNUM
    ),
    st.sampled_from(["", ":5060", ":0", ":65535", ":65536", ":123456", ":", ":x"]),
    st.lists(
        st.tuples(
            st.sampled_from(["transport", "lr", "user", "x!%*", "", "a b", "t=q"]),
            st.one_of(st.none(), st.text("abz09.:[]-_%", max_size=6), _PIECE),
        ),
        max_size=3,
    ).map(lambda ps: "".join(f";{k}" if v is None else f";{k}={v}" for k, v in ps)),
    st.sampled_from(["", "", "", "?x=y", "?", "@"]),
)


def _uri_fields(u: object) -> tuple[object, ...]:
    return (u.scheme, u.user, u.password, u.host, u.port, u.params, u.headers, str(u))  # type: ignore[attr-defined]


@SETTINGS
@given(st.one_of(_URI_REST, st.lists(_PIECE, max_size=8).map("".join)))
def test_sip_uri_fast_path_agrees_with_the_grammar(rest: str) -> None:
    from sipcore import uri

    general = _outcome(lambda t: uri._parse_sip_general("sip", t, "sip:" + t), rest)
    fast = _outcome(lambda t: uri._parse_sip("sip", t, "sip:" + t), rest)
    if general[0] == "ok" and fast[0] == "ok":
        assert _uri_fields(fast[1]) == _uri_fields(general[1]), rest
    else:
        assert fast == general, rest
