"""Binding <-> msgpack bytes, shared by the Redis values and the SQLite state file.

A positional array led by a format version: compact (about 150 bytes for a typical binding) and
cheap to decode. The AOR is not inside: it is the Redis key / the SQLite row's column.
"""

from __future__ import annotations

import msgpack

from registrar.location.binding import Binding, Flow

FORMAT = 1


def encode(b: Binding) -> bytes:
    f = b.flow
    return msgpack.packb(
        (
            FORMAT,
            b.contact,
            b.expires_at,
            b.q,
            b.call_id,
            b.cseq,
            f.transport,
            f.source_ip,
            f.source_port,
            f.local_address,
            f.connection_id,
            b.registered_at,
            b.instance,
            b.reg_id,
            b.user_agent,
            b.path,
            b.received,
            b.flow_alive,
        ),
        use_bin_type=True,
    )


def decode(aor: str, data: bytes) -> Binding:
    v = msgpack.unpackb(data, use_list=False, raw=False)
    if v[0] != FORMAT:
        raise ValueError(f"unknown binding format {v[0]!r}")
    return Binding(
        aor=aor,
        contact=v[1],
        expires_at=v[2],
        q=v[3],
        call_id=v[4],
        cseq=v[5],
        flow=Flow(v[6], v[7], v[8], v[9], v[10]),
        registered_at=v[11],
        instance=v[12],
        reg_id=v[13],
        user_agent=v[14],
        path=v[15],
        received=v[16],
        flow_alive=v[17],
    )
