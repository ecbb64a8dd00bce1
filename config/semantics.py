"""Checks across objects (references, duplicates, files) and the lookup indexes they need anyway.

Why one pass that both checks and indexes: the duplicate checks *are* index construction, and a
10,000-account file must load in well under a second. Every issue is collected (never raise on the
first) with the schema location of the offending value, so the loader can give it a YAML line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.model import AccountEntry, DidEntry, account_id
from config.schema import Account, ConfigFile, Customer

RESERVED_EXTENSIONS = frozenset({"2000", "2020", "2222"})  # support, conference, own voicemail
RATE_FILE_SUFFIXES = (".csv", ".xlsx", ".xlsm")

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Issue:
    """A problem at ``loc``; ``first`` locates the earlier definition a duplicate collides with."""

    loc: Loc
    reason: str
    first: Loc | None = None


@dataclass(slots=True)
class Indexes:
    customers: dict[str, Customer] = field(default_factory=dict)
    domains: dict[str, Customer] = field(default_factory=dict)
    accounts: dict[str, AccountEntry] = field(default_factory=dict)
    logins: dict[tuple[str, str], AccountEntry] = field(default_factory=dict)
    dids: dict[str, DidEntry] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)

    def problem(self, loc: Loc, reason: str, first: Loc | None = None) -> None:
        self.issues.append(Issue(loc, reason, first))


def check(cfg: ConfigFile, base_dir: Path) -> Indexes:
    """Index customers, domains, logins and DIDs, collecting every cross-reference problem."""
    ix = Indexes()
    did_where: dict[str, Loc] = {}
    login_where: dict[tuple[str, str], Loc] = {}
    domain_where: dict[str, Loc] = {}
    for ci, cust in enumerate(cfg.customers):
        cloc: Loc = ("customers", ci)
        if cust.id in ix.customers:
            ix.problem((*cloc, "id"), f"customer id {cust.id!r} is used twice")
        else:
            ix.customers[cust.id] = cust
        for di, domain in enumerate(cust.domains):
            if domain in domain_where:
                ix.problem((*cloc, "domains", di), f"domain {domain!r} is used twice", domain_where[domain])
            else:
                domain_where[domain] = (*cloc, "domains", di)
                ix.domains[domain] = cust
        _check_customer(cfg, cust, cloc, ix, did_where, login_where)
    _check_platform(cfg, base_dir, ix)
    return ix


def _check_customer(
    cfg: ConfigFile,
    cust: Customer,
    cloc: Loc,
    ix: Indexes,
    did_where: dict[str, Loc],
    login_where: dict[tuple[str, str], Loc],
) -> None:
    packages = cfg.rating.packages
    if cust.default_package is not None and cust.default_package not in packages:
        ix.problem((*cloc, "default_package"), f"unknown package {cust.default_package!r}{_known(packages)}")
    if cust.trunk is not None and cust.trunk not in cfg.trunks:
        ix.problem((*cloc, "trunk"), f"unknown trunk {cust.trunk!r}{_known(cfg.trunks)}")
    for ti, choice in enumerate(cust.trunks or ()):
        if choice.trunk not in cfg.trunks:
            ix.problem((*cloc, "trunks", ti, "trunk"), f"unknown trunk {choice.trunk!r}{_known(cfg.trunks)}")

    own_dids: set[str] = set()
    for di, did in enumerate(cust.dids):
        dloc = (*cloc, "dids", di, "number")
        if did.number in did_where:
            ix.problem(dloc, f"DID {did.number} is defined twice", did_where[did.number])
            continue
        did_where[did.number] = dloc
        own_dids.add(did.number)
        ix.dids[did.number] = DidEntry(cust, did)

    by_ext: dict[str, Account] = {}
    ext_where: dict[str, Loc] = {}
    for ai, acc in enumerate(cust.accounts):
        aloc = (*cloc, "accounts", ai)
        ext = acc.extension
        if ext in RESERVED_EXTENSIONS:
            ix.problem((*aloc, "extension"), f"extension {ext} is reserved (2000/2020/2222 are short codes)")
        elif ext in by_ext:
            ix.problem(
                (*aloc, "extension"), f"extension {ext} is used twice in customer {cust.id!r}", ext_where[ext]
            )
        else:
            by_ext[ext] = acc
            ext_where[ext] = (*aloc, "extension")
        entry = AccountEntry(account_id(cust.id, ext), cust, acc)
        ix.accounts.setdefault(entry.id, entry)
        for domain in cust.domains:
            key = (domain, acc.username)
            if key in login_where:
                ix.problem(
                    (*aloc, "username"),
                    f"SIP username {acc.username!r} is used twice in domain {domain}",
                    login_where[key],
                )
            else:
                login_where[key] = (*aloc, "username")
                ix.logins[key] = entry
        package = acc.package or cust.default_package
        if package is None:
            ix.problem(aloc, "no package: set the account's package or the customer's default_package")
        elif acc.package is not None and acc.package not in packages:
            ix.problem((*aloc, "package"), f"unknown package {acc.package!r}{_known(packages)}")
        if acc.outgoing_number is not None and acc.outgoing_number not in own_dids:
            ix.problem(
                (*aloc, "outgoing_number"),
                f"outgoing number {acc.outgoing_number} is not one of the DIDs of customer {cust.id!r}",
            )
        if acc.ha1 is not None and cfg.registrar.realm is None and len(cust.domains) > 1:
            ix.problem(
                (*aloc, "ha1"), "ha1 fits one realm: set registrar.realm when a customer has several domains"
            )
        _check_forwarding(acc, aloc, ix)

    for name, group in cust.groups.items():
        for mi, member in enumerate(group.members):
            if member.extension not in by_ext:
                ix.problem(
                    (*cloc, "groups", name, "members", mi, "extension"),
                    f"group {name!r}: no account with extension {member.extension}",
                )
    for di, did in enumerate(cust.dids):
        dest, dloc = did.to, (*cloc, "dids", di, "to")
        if dest.kind in ("account", "voicemail"):
            acc = by_ext.get(dest.target or "")
            if acc is None:
                ix.problem(dloc, f"DID {did.number}: no account with extension {dest.target} in {cust.id!r}")
            elif dest.kind == "voicemail" and not acc.voicemail:
                ix.problem(dloc, f"DID {did.number}: account {dest.target} has voicemail off")
        elif dest.kind == "group" and dest.target not in cust.groups:
            ix.problem(dloc, f"DID {did.number}: unknown group {dest.target!r}{_known(cust.groups)}")


def _check_forwarding(acc: Account, aloc: Loc, ix: Indexes) -> None:
    own = acc.extension
    fwd = acc.forwarding
    for kind in ("permanent", "busy", "unreachable"):
        rule = getattr(fwd, kind)
        if rule is not None and rule.to == own:
            ix.problem((*aloc, "forwarding", kind, "to"), f"{kind} forwarding of {own} points to itself")
    if fwd.no_answer is not None:
        for ti, step in enumerate(fwd.no_answer.targets):
            if step.to == own:
                ix.problem((*aloc, "forwarding", "no_answer", "targets", ti, "to"), "forwards to itself")
    if acc.follow_me is not None:
        for ti, step in enumerate(acc.follow_me.destinations):
            if step.to == own:
                ix.problem((*aloc, "follow_me", "destinations", ti, "to"), "rings the account itself")
    needs_box = (fwd.no_answer is not None and fwd.no_answer.voicemail) or (
        acc.follow_me is not None and acc.follow_me.voicemail
    )
    if needs_box and not acc.voicemail:
        ix.problem(aloc, f"account {own} uses voicemail as last resort but has voicemail off")


def _check_platform(cfg: ConfigFile, base_dir: Path, ix: Indexes) -> None:
    if cfg.default_domain is not None and cfg.default_domain not in ix.domains:
        ix.problem(("default_domain",), f"default_domain {cfg.default_domain!r} is not a customer's domain")
    proxy = cfg.proxy
    if proxy.outbound_trunk is not None and proxy.outbound_trunk not in cfg.trunks:
        ix.problem(("proxy", "outbound_trunk"), f"unknown trunk {proxy.outbound_trunk!r}{_known(cfg.trunks)}")
    elif proxy.outbound_trunk is None and proxy.outbound_trunks is None and len(cfg.trunks) > 1:
        ix.problem(
            ("trunks",),
            "several trunks: say which one is proxy.outbound_trunk (or list proxy.outbound_trunks)",
        )
    for name, trunk in cfg.trunks.items():  # our Via and Record-Route towards it name the TLS listener
        if trunk.transport == "tls" and cfg.server.tls is None:
            ix.problem(("trunks", name, "transport"), f"trunk {name!r} uses TLS: server.tls is needed too")
        elif trunk.tls is not None and trunk.transport != "tls":
            ix.problem(("trunks", name, "tls"), f"trunk {name!r}: tls settings need transport: tls")
    for ti, choice in enumerate(proxy.outbound_trunks or ()):
        if choice.trunk not in cfg.trunks:
            ix.problem(
                ("proxy", "outbound_trunks", ti, "trunk"),
                f"unknown trunk {choice.trunk!r}{_known(cfg.trunks)}",
            )
    rating = cfg.rating
    for name, pkg in rating.packages.items():
        if pkg.rate_table not in rating.rate_tables:
            ix.problem(
                ("rating", "packages", name, "rate_table"),
                f"package {name!r}: unknown rate table {pkg.rate_table!r}{_known(rating.rate_tables)}",
            )
    for name, rel in rating.rate_tables.items():
        path = resolve(base_dir, rel)
        if path.suffix.lower() not in RATE_FILE_SUFFIXES:
            ix.problem(("rating", "rate_tables", name), f"rate file {rel!r} must be .csv or .xlsx")
        elif not path.is_file():
            ix.problem(("rating", "rate_tables", name), f"rate file not found: {path}")
    reg = cfg.registrar
    if reg.nonce_secret_file is not None and not resolve(base_dir, reg.nonce_secret_file).is_file():
        missing = resolve(base_dir, reg.nonce_secret_file)
        ix.problem(("registrar", "nonce_secret_file"), f"file not found: {missing}")
    admin = cfg.server.admin
    if (
        admin is not None
        and admin.token_file is not None
        and not resolve(base_dir, admin.token_file).is_file()
    ):
        ix.problem(
            ("server", "admin", "token_file"), f"file not found: {resolve(base_dir, admin.token_file)}"
        )
    shared = cfg.server.workers > 1 or reg.location.backend == "redis"
    if shared and reg.nonce_secret is None and reg.nonce_secret_file is None:
        ix.problem(
            ("registrar",),
            "several workers or a shared location store need a shared nonce_secret (or nonce_secret_file)",
        )
    if cfg.server.cluster is not None and reg.location.backend != "redis":
        ix.problem(("server", "cluster"), "several hosts share their registrations in Redis: "
                   "server.cluster needs registrar.location.backend: redis")  # fmt: skip


def resolve(base_dir: Path, rel: str) -> Path:
    """A path from the YAML file: absolute as is, else relative to the YAML file's directory."""
    p = Path(rel).expanduser()
    return p if p.is_absolute() else base_dir / p


def _known(names: Any) -> str:
    names = sorted(names)
    if not names:
        return " (none defined)"
    shown = ", ".join(repr(n) for n in names[:8])
    return f" (known: {shown}{', …' if len(names) > 8 else ''})"
