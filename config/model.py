"""The loaded configuration: the validated schema plus the indexes every consumer looks things up in.

A Config is built once per (re)load by config.loader.load_config and never changes; a reload builds a
new one and the server swaps the reference. Lookups on the call and REGISTER paths are dict probes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from config.schema import (
    Account,
    CdrSection,
    ConfigFile,
    Customer,
    Did,
    ProxySection,
    RatingSection,
    RegistrarSection,
    ServerSection,
    Trunk,
)
from rating.model import RateTable


def account_id(customer_id: str, extension: str) -> str:
    """Stable account id used in CDRs, metrics and rating: ``<customer id>/<extension>``."""
    return f"{customer_id}/{extension}"


def local_hosts_of(file: ConfigFile) -> frozenset[str]:
    """Listen IPs (unless wildcard), the advertised addresses and ``server.local_addresses``.

    A request addressed to one of these is for ``default_domain``. Wildcard listen addresses add
    nothing here: the server adds its interfaces' addresses when it binds.
    """
    server = file.server
    hosts = {a.host.lower() for a in (*server.listen.udp, *server.listen.tcp)} - {"0.0.0.0", "::"}
    if server.advertised_address is not None:
        hosts.add(server.advertised_address.host.lower())
    if server.cluster is not None:  # the other hosts route requests to it
        hosts.add(server.cluster.advertise.host.lower())
    hosts.update(server.local_addresses)
    return frozenset(hosts)


@dataclass(frozen=True, slots=True)
class AccountEntry:
    """One account with its customer (so a login lookup answers both at once)."""

    id: str
    customer: Customer
    account: Account


@dataclass(frozen=True, slots=True)
class DidEntry:
    customer: Customer
    did: Did


@dataclass(frozen=True, slots=True)
class RuntimePaths:
    """Where runtime state goes: relative paths in YAML are under ``server.state_dir``."""

    state_dir: Path
    location_state_file: Path | None
    cdr_database: Path | None  # SQLite file; None with PostgreSQL
    cdr_spool_dir: Path


@dataclass(frozen=True, slots=True)
class Summary:
    customers: int
    accounts: int
    dids: int
    rate_rows: int

    def __str__(self) -> str:
        return (
            f"{self.customers} customers, {self.accounts} accounts, {self.dids} DIDs, "
            f"{self.rate_rows} rate rows"
        )


@dataclass(frozen=True, slots=True)
class Config:
    """A fully valid configuration. Sections are the frozen schema models; the maps are read-only."""

    source: Path | None
    file: ConfigFile
    rate_tables: Mapping[str, RateTable]
    nonce_secret: bytes | None
    paths: RuntimePaths
    customers: tuple[Customer, ...]
    """In file order (as in the YAML)."""
    customers_by_id: Mapping[str, Customer]
    domains: Mapping[str, Customer]
    """Customer by SIP domain (lower case)."""
    accounts: Mapping[str, AccountEntry]
    """By account id (see account_id())."""
    logins: Mapping[tuple[str, str], AccountEntry]
    """By (domain, SIP username): what REGISTER and digest authentication look up."""
    dids: Mapping[str, DidEntry]
    """By E.164 number."""
    local_hosts: frozenset[str]
    """Hosts that mean "this server" (Kamailio's ``myself``); see local_hosts_of()."""

    @property
    def default_domain(self) -> str | None:
        return self.file.default_domain

    @property
    def server(self) -> ServerSection:
        return self.file.server

    @property
    def registrar(self) -> RegistrarSection:
        return self.file.registrar

    @property
    def proxy(self) -> ProxySection:
        return self.file.proxy

    @property
    def trunks(self) -> Mapping[str, Trunk]:
        return self.file.trunks

    @property
    def cdr(self) -> CdrSection:
        return self.file.cdr

    @property
    def rating(self) -> RatingSection:
        return self.file.rating

    def domain_for_host(self, host: str) -> str | None:
        """The customer domain a Request-URI / To host stands for, or None when it is not ours."""
        host = host.lower().rstrip(".")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if host in self.domains:
            return host
        if host in self.local_hosts:
            return self.default_domain
        return None

    def summary(self) -> Summary:
        return Summary(
            customers=len(self.customers),
            accounts=len(self.accounts),
            dids=len(self.dids),
            rate_rows=sum(len(t.rows) for t in self.rate_tables.values()),
        )
