"""What a reload changes: the keys that differ between two loaded configurations, split into those the
running server applies (`LIVE`) and those that need a restart.

A key is live only when it is listed here, so a key added to the schema later is reported as needing
a restart until the server learns to apply it: a change is never silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

# Sections compared key by key (the others as a whole).
_BY_KEY = ("server", "registrar", "proxy", "rating", "media")

LIVE = frozenset(
    {
        "default_domain",
        "customers",  # accounts, DIDs, groups, forwarding, packages per account
        "trunks",
        "server.local_addresses",
        "server.limits",  # new messages and connections
        "server.drain_timeout",
        "registrar.realm",
        "registrar.nonce_secret",
        "registrar.nonce_secret_file",
        "registrar.nonce_lifetime",
        "registrar.expires",
        "registrar.max_contacts",
        "registrar.max_contacts_policy",
        "registrar.expires_jitter_percent",
        "registrar.digest_algorithms",
        "registrar.md5_only_user_agents",
        "registrar.guard",
        "proxy.max_call_duration",
        "proxy.no_answer_timeout",
        "proxy.max_forward_hops",
        "proxy.support_destination",
        "proxy.outbound_trunk",
        "proxy.outbound_trunks",  # the ordered set: new calls use the new one
        "proxy.feature_codes",
        "rating.premium_categories",
        "rating.rate_tables",
        "rating.packages",
        "rating.billing",  # the billing run reads it at each look (every 5 s)
        "rate_tables",  # the rate files' contents
        "media.rtp_timeout",  # the media service reloads these itself (its own SIGHUP)
        "media.prompts",
        "media.voicemail",
        "media.conference",
        "media.smtp",
    }
)


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    changed: tuple[str, ...]  # applied live
    needs_restart: tuple[str, ...]  # different in the file, kept as they are until a restart


def config_diff(old: Any, new: Any) -> ConfigDiff:
    """``old`` and ``new`` are loaded configurations (config.model.Config)."""
    keys: list[str] = []
    a, b = old.file, new.file
    for name in type(b).model_fields:
        x, y = getattr(a, name), getattr(b, name)
        if x == y:
            continue
        if name in _BY_KEY and isinstance(y, BaseModel) and type(x) is type(y):
            keys += [f"{name}.{k}" for k in type(y).model_fields if getattr(x, k) != getattr(y, k)]
        else:
            keys.append(name)
    if dict(old.rate_tables) != dict(new.rate_tables):
        keys.append("rate_tables")
    if old.nonce_secret != new.nonce_secret and not any(k.startswith("registrar.nonce_secret") for k in keys):
        keys.append("registrar.nonce_secret_file")  # same file name, new secret in it
    return ConfigDiff(tuple(k for k in keys if k in LIVE), tuple(k for k in keys if k not in LIVE))
