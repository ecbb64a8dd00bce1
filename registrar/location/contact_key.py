"""Which stored binding a REGISTER's Contact refers to.

RFC 5626 (outbound): a Contact with ``+sip.instance`` and ``reg-id`` is identified by that pair, so a
phone whose NAT mapping changed replaces its old binding instead of adding one. RFC 5627: with an
instance but no reg-id, the instance alone identifies it. Otherwise RFC 3261 §19.1.4 URI equality,
approximated by a canonical form: scheme and host compare case-insensitively, the user part exactly,
parameters by name case-insensitively and in any order, headers exactly. (Unlike full §19.1.4 we do
not ignore a parameter present on one side only; phones re-register with the same Contact, so a
difference means a different binding, which is the safe reading.)
"""

from __future__ import annotations


def contact_key(contact: str, instance: str | None = None, reg_id: int | None = None) -> str:
    if instance is not None and reg_id is not None:
        return f"o\x00{instance}\x00{reg_id}"
    if instance is not None:
        return f"i\x00{instance}"
    return "u\x00" + canonical_uri(contact)


def canonical_uri(uri: str) -> str:
    """Canonical text of a SIP URI for equality (see the module docstring for the rules)."""
    uri = uri.strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1]
    uri, sep, headers = uri.partition("?")
    scheme, _, rest = uri.partition(":")
    base, *params = rest.split(";")
    user, at, hostport = base.rpartition("@")
    canon = f"{scheme.lower()}:{user}{at}{hostport.lower()}"
    if params:
        canon += "".join(sorted(";" + _canonical_param(p) for p in params if p))
    return canon + sep + headers


def _canonical_param(param: str) -> str:
    name, eq, value = param.partition("=")
    return f"{name.lower()}{eq}{value.lower()}"
