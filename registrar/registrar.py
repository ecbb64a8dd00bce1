"""REGISTER processing, RFC 3261 §10.3, as pure decisions.

``Registrar.decide(request, flow, now)`` walks the RFC's steps — scanner/ban guard, digest
authentication (the same 401 for unknown users and wrong passwords), AOR ownership, Contact and expiry
rules — and returns either a reply to send, a silent drop, or the changes to apply to the location
store. Applying them (sync for memory, async for Redis) and sending the answer is the edge's job;
``success_headers`` builds the 200 OK from what the store returns. Nothing here reads a clock or a
socket.

``request`` is a `RegisterView`, whichever reader read it: `ParsedRegister` over the SIP core's parsed
`Request` (any REGISTER), or the lane's `registrar.lane.LaneRequest` (the everyday REGISTER read from
its bytes). One decision procedure for both, so the two paths cannot drift apart.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Protocol

from registrar.guard import Guard, IpBanned, Verdict
from registrar.location import Binding, ContactChange, OverflowPolicy, RegisterChanges
from registrar.location import Flow as LocationFlow
from sipcore.digest import AuthReason, AuthResult, Challenger, Credentials, aor_matches
from sipcore.errors import SipParseError
from sipcore.flow import Flow
from sipcore.headers import Contact
from sipcore.message import Request
from sipcore.records import fast_init
from sipcore.uri import SipUri, Uri


@dataclass(frozen=True, slots=True)
class Account:
    """What the registrar knows of one login (built from the configuration)."""

    account_id: str
    customer_id: str
    domain: str
    username: str
    credentials: Credentials
    aliases: frozenset[str] = frozenset()  # other user parts of its AOR (extension, DIDs)


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    realm: str
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 5
    policy: OverflowPolicy = OverflowPolicy.DROP_OLDEST
    jitter_percent: int = 0  # shorten granted expiries by up to this share, to spread re-registrations
    md5_only_user_agents: tuple[str, ...] = ()  # lower-case User-Agent substrings challenged MD5 only
    node_id: str = "node"  # prefix of TCP connection ids, unique per process sharing a store


# ---- what decide reads of a REGISTER ------------------------------------------------------------------
class ContactView(Protocol):
    """One Contact value as `Registrar.decide` reads it. Reading ``is_sip``, ``expires`` or ``q`` may
    raise SipParseError (answered 400 "Bad Contact")."""

    @property
    def star(self) -> bool: ...  # the wildcard "*"

    @property
    def uri_text(self) -> str: ...  # as sent: bindings keep it byte-exact

    @property
    def is_sip(self) -> bool: ...  # a SIP or SIPS URI (anything else is refused)

    @property
    def expires(self) -> int | None: ...  # the expires parameter

    @property
    def q(self) -> int | None: ...  # q in thousandths

    @property
    def instance(self) -> str | None: ...  # +sip.instance

    @property
    def reg_id(self) -> str | None: ...  # reg-id as sent (decide checks it is a number)


class RegisterView(Protocol):
    """A REGISTER as `Registrar.decide` reads it. Why a view: two readers (the general parser, the
    lane) feed one decision procedure. Values that parse on first use (``to_uri``,
    ``header_expires``, ``contacts``) may raise SipParseError; decide answers it at the RFC step
    that reads them, so a malformed header costs nothing until then and both readers answer alike."""

    @property
    def request_uri(self) -> str: ...  # as sent: the digest "uri" must equal it

    @property
    def ruri(self) -> Uri: ...

    @property
    def user_agent(self) -> str | None: ...

    @property
    def authorization(self) -> str | None: ...

    @property
    def to_sip(self) -> tuple[str | None, str, int | None] | None: ...  # the AOR: To's (user as sent,

    # host, port) when its URI is SIP or SIPS, else None. Parts, not a URI: the lane builds none.

    @property
    def call_id(self) -> str: ...

    @property
    def cseq(self) -> int: ...

    @property
    def header_expires(self) -> int | None: ...  # the Expires header

    @property
    def contacts(self) -> Sequence[ContactView]: ...

    @property
    def path(self) -> tuple[str, ...]: ...  # Path values (RFC 3327), stored and echoed in the 200

    @property
    def path_supported(self) -> bool: ...  # ``Supported: path`` (RFC 3327 §5.3: else Path is refused)


class ParsedRegister:
    """`RegisterView` of a REGISTER the SIP core parsed: the general path, for any REGISTER."""

    __slots__ = ("request",)

    def __init__(self, request: Request) -> None:
        self.request = request

    @property
    def request_uri(self) -> str:
        return self.request.uri

    @property
    def ruri(self) -> Uri:
        return self.request.ruri

    @property
    def user_agent(self) -> str | None:
        return self.request.headers.get("user-agent")

    @property
    def authorization(self) -> str | None:
        return self.request.headers.get("authorization")

    @property
    def to_sip(self) -> tuple[str | None, str, int | None] | None:
        uri = self.request.to.uri
        return (uri.user, uri.host, uri.port) if isinstance(uri, SipUri) else None

    @property
    def call_id(self) -> str:
        return self.request.call_id

    @property
    def cseq(self) -> int:
        return self.request.cseq[0]

    @property
    def header_expires(self) -> int | None:
        return self.request.expires

    @property
    def contacts(self) -> list[ParsedContact]:
        return [ParsedContact(c) for c in self.request.contacts]

    @property
    def path(self) -> tuple[str, ...]:
        headers = self.request.headers
        return tuple(headers.get_all("path")) if "path" in headers else ()

    @property
    def path_supported(self) -> bool:
        return any(t.lower() == "path" for t in self.request.option_tags("supported"))


class ParsedContact:
    """`ContactView` of a parsed Contact value."""

    __slots__ = ("contact",)

    def __init__(self, contact: Contact) -> None:
        self.contact = contact

    @property
    def star(self) -> bool:
        return self.contact.star

    @property
    def uri_text(self) -> str:
        return self.contact.uri_text

    @property
    def is_sip(self) -> bool:
        return isinstance(self.contact.uri, SipUri)

    @property
    def expires(self) -> int | None:
        return self.contact.expires

    @property
    def q(self) -> int | None:
        return self.contact.q

    @property
    def instance(self) -> str | None:
        return self.contact.param("+sip.instance")

    @property
    def reg_id(self) -> str | None:
        return self.contact.param("reg-id")


# ---- decisions --------------------------------------------------------------------------------------
@fast_init
@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    auth: AuthResult | None = None
    ban: IpBanned | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Drop:
    why: str
    ban: IpBanned | None = None


# Drop.why of a fresh source's credentials for a username under attack (Guard.refuses_guess)
UNDER_ATTACK = "under attack"


@fast_init
@dataclass(frozen=True, slots=True)
class Apply:
    """Apply ``changes`` to ``aor`` (or only fetch when ``changes`` is None), then answer 200 with the
    bindings and the request's ``path``."""

    aor: str
    account: Account
    changes: RegisterChanges | None
    max_contacts: int
    policy: OverflowPolicy
    auth: AuthResult | None = field(default=None)
    path: tuple[str, ...] = ()


Decision = Reply | Drop | Apply
AccountLookup = Callable[[str, str], Account | None]  # (domain, username) -> Account
DomainOf = Callable[[SipUri], str | None]  # URI host and port -> configured domain, None when not ours


class Registrar:
    def __init__(
        self,
        settings: RegistrarSettings,
        challenger: Challenger,
        accounts: AccountLookup,
        domain_of: DomainOf,
        guard: Guard | None = None,
        rng: random.Random | None = None,
        nonce_secret: bytes | str | None = None,
    ) -> None:
        self.settings = settings
        # the nonce secret as configured (None: drawn at random): a reload that keeps it keeps the challenger
        self.nonce_secret = nonce_secret
        self.challenger = challenger
        self.accounts = accounts
        self.domain_of = domain_of
        self.guard = guard
        self.rng = rng or random.Random()
        self.stale_nonces = 0

    # -- entry point --
    def decide(self, req: RegisterView, flow: Flow, now: float) -> Decision:
        """The one decision on a REGISTER, whichever reader read it (`ParsedRegister` or the lane's
        `LaneRequest`): a reply, a silent drop, or the changes to apply before answering 200."""
        ip = flow.remote[0]
        user_agent = req.user_agent
        refused = self.screen(ip, user_agent, now)
        if refused is not None:
            return refused
        ruri = req.ruri
        if not isinstance(ruri, SipUri):
            return Reply(416)
        domain = self.domain_of(ruri)
        if domain is None:
            return Reply(403, "Not a domain of this registrar")
        outcome = self.authenticate(ip, req.authorization, req.request_uri, domain, user_agent, now)
        if not isinstance(outcome, tuple):
            return outcome
        account, result = outcome

        # §10.3 step 5: the To header is the AOR; it must be SIP/SIPS and belong to this account.
        try:
            to = req.to_sip
        except SipParseError as exc:
            return Reply(400, f"Bad To header: {exc.reason}", auth=result)
        if to is None:
            return Reply(400, "To header is not a SIP or SIPS URI", auth=result)
        to_user, to_host, to_port = to
        if to_host == ruri.host and to_port == ruri.port:
            to_domain: str | None = domain
        else:
            to_domain = self.domain_of(SipUri("sip", to_user, to_host, to_port))
        if not self.owns(account, to_user, to_domain):
            return Reply(403, "AOR does not belong to the authenticated account", auth=result)
        aor = f"sip:{account.username}@{account.domain}"

        path = req.path
        if path and not req.path_supported:
            # RFC 3327 §5.3: a Path from a UA that did not say it supports Path is not stored; refused
            # with 420 naming the extension (Kamailio's "strict" path mode), so no edge is skipped silently.
            return Reply(420, "Bad Extension", (("Unsupported", "path"),), auth=result)
        try:
            changes = self._changes(req, flow, user_agent, path)
        except Refusal as refusal:
            return Reply(refusal.status, refusal.reason, refusal.headers, auth=result)
        s = self.settings
        return Apply(aor, account, changes, s.max_contacts, s.policy, result, path)

    # -- the steps of decide --
    def screen(self, ip: str, user_agent: str | None, now: float) -> Drop | None:
        """The brute-force guard's word on a source before any work: a ban or a scanner is dropped."""
        guard = self.guard
        if guard is not None:
            verdict, ban = guard.check_request(ip, user_agent, now)
            if verdict is not Verdict.ALLOW:
                return Drop(verdict.value, ban)
        return None

    def authenticate(
        self,
        ip: str,
        authorization: str | None,
        request_uri: str,
        domain: str,
        user_agent: str | None,
        now: float,
    ) -> tuple[Account, AuthResult] | Reply | Drop:
        """Digest verification for ``domain``: (account, result) when it succeeds, else the answer
        (a challenge, the same for unknown users and wrong passwords; 400; or a drop once banned)."""
        checked = self.verify_guarded(ip, authorization, "REGISTER", domain, now, request_uri=request_uri)
        if isinstance(checked, Drop):
            return checked
        result, account = checked
        if not result.ok:
            if result.reason is AuthReason.STALE_NONCE:
                self.stale_nonces += 1
            if result.status == 400:
                return Reply(400, f"Bad Authorization header ({result.reason.value})", auth=result)
            return self.challenge(now, result.stale, result, user_agent)
        if account is None:  # pragma: no cover - verify succeeded, so credentials were found
            return self.challenge(now, False, result, user_agent)
        return account, result

    def verify_guarded(
        self,
        ip: str,
        authorization: str | None,
        method: str,
        domain: str,
        now: float,
        request_uri: str | None = None,
    ) -> tuple[AuthResult, Account | None] | Drop:
        """Digest verification with the guard's word, for REGISTER and the proxy's INVITE/SUBSCRIBE
        alike: a fresh source's attempt at a username under attack is not checked and counts as a
        failure (it bans); a failure is counted (a ban drops the request); a success makes the source
        known for the username. Otherwise (the result, the account the credentials came from)."""
        accounts = self.accounts
        found: list[Account] = []  # the account the credentials came from, looked up once
        guard = self.guard
        refused: list[str] = []

        def credentials(user: str) -> Credentials | None:
            if guard is not None and guard.refuses_guess(ip, user, now):
                refused.append(user)  # a fresh source against a username under attack: not checked
                return None
            account = accounts(domain, user)
            if account is None:
                return None
            found.append(account)
            return account.credentials

        result = self.challenger.verify(authorization, method, credentials, now, request_uri=request_uri)
        if guard is not None:
            if refused:  # counted as a failure: it bans the source
                return Drop(UNDER_ATTACK, guard.record_failure(ip, refused[0], now))
            if result.ok:  # its source becomes known for the username (and its typos forgiven)
                guard.record_success(ip, result.username, now)
            elif result.is_failure:
                ban = guard.record_failure(ip, result.username, now)
                if ban is not None:
                    return Drop("banned", ban)
        return result, (found[0] if found else None)

    @staticmethod
    def owns(account: Account, to_user: str | None, to_domain: str | None) -> bool:
        """§10.3 step 5: the AOR (To user, percent-escaped as sent, in ``to_domain``) is the account's."""
        return to_domain == account.domain and aor_matches(account.username, to_user, account.aliases)

    def challenge_values(self, now: float, stale: bool = False, user_agent: str | None = None) -> list[str]:
        """One challenge per algorithm; never depends on the username. Only MD5 for User-Agents known
        to abort on an algorithm they do not know."""
        values = self.challenger.challenge(now, stale=stale)
        agents = self.settings.md5_only_user_agents
        if agents and user_agent:
            ua = user_agent.lower()
            if any(a in ua for a in agents):
                md5 = [v for v in values if "algorithm=MD5" in v.replace('"', "")]
                values = md5 or values
        return values

    def challenge(
        self, now: float, stale: bool = False, result: AuthResult | None = None, user_agent: str | None = None
    ) -> Reply:
        """401 with the challenges (WWW-Authenticate)."""
        headers = tuple(("WWW-Authenticate", v) for v in self.challenge_values(now, stale, user_agent))
        return Reply(401, None, headers, auth=result)

    def _credentials(self, domain: str, user: str) -> Credentials | None:
        account = self.accounts(domain, user)
        return account.credentials if account is not None else None

    # -- contacts and expiries --
    def _changes(
        self, req: RegisterView, flow: Flow, user_agent: str | None, path: tuple[str, ...]
    ) -> RegisterChanges | None:
        s = self.settings
        try:
            contacts = req.contacts
        except SipParseError as exc:
            raise Refusal(400, f"Bad Contact header: {exc.reason}") from exc
        try:
            header_expires = req.header_expires
        except SipParseError as exc:
            raise Refusal(400, exc.reason) from exc
        if not contacts:
            return None  # a query: answer with the current bindings
        loc_flow = self.location_flow(flow)
        user_agent = (user_agent or "")[:200]
        # (no generator for the everyday single Contact: this runs for every REGISTER)
        wildcard = contacts[0].star if len(contacts) == 1 else any(c.star for c in contacts)
        if wildcard:
            if len(contacts) > 1 or header_expires != 0:
                raise Refusal(400, "Contact: * needs Expires: 0 and no other Contact")
            return RegisterChanges(req.call_id, req.cseq, loc_flow, (), True, user_agent, path)
        if len(contacts) > s.max_contacts:
            raise Refusal(403, f"Too many contacts (at most {s.max_contacts})")
        out: list[ContactChange] = []
        for c in contacts:
            try:
                is_sip = c.is_sip
                param_expires = c.expires
                q = c.q
            except SipParseError as exc:
                raise Refusal(400, f"Bad Contact: {exc.reason}") from exc
            if not is_sip:
                raise Refusal(400, "Contact URI must be a SIP or SIPS URI")
            out.append(
                self.contact_change(c.uri_text, param_expires, header_expires, q, c.instance, c.reg_id)
            )
        return RegisterChanges(req.call_id, req.cseq, loc_flow, tuple(out), False, user_agent, path)

    def location_flow(self, flow: Flow) -> LocationFlow:
        """The flow a binding keeps (a TCP connection named across the processes sharing a store)."""
        conn_id = flow.conn_id
        remote = flow.remote
        return LocationFlow(
            flow.transport,
            remote[0],
            remote[1],
            _local_text(flow.local),
            f"{self.settings.node_id}/{conn_id}" if conn_id else None,
        )

    def contact_change(
        self,
        uri_text: str,
        param_expires: int | None,
        header_expires: int | None,
        q: int | None,
        instance: str | None,
        reg_id_text: str | None,
    ) -> ContactChange:
        """One Contact's change: its expiry (the parameter, else the Expires header, else the default;
        below the minimum is 423, above the maximum is clamped, then the optional jitter)."""
        s = self.settings
        expires = param_expires if param_expires is not None else header_expires
        if expires is None:
            expires = s.default_expires
        if expires != 0:
            if expires < s.min_expires:
                raise Refusal(423, None, (("Min-Expires", str(s.min_expires)),))
            expires = min(expires, s.max_expires)
            if s.jitter_percent:
                cut = int(expires * s.jitter_percent / 100)
                expires = max(s.min_expires, expires - self.rng.randint(0, cut))
        reg_id = int(reg_id_text) if reg_id_text and reg_id_text.isdigit() and len(reg_id_text) < 10 else None
        return ContactChange(uri_text, expires, 1000 if q is None else q, instance, reg_id)

    # -- the answer --
    @staticmethod
    def success_headers(
        bindings: tuple[Binding, ...] | list[Binding], now: float, path: tuple[str, ...] = ()
    ) -> list[tuple[str, str]]:
        """The 200 OK's headers from the bindings and the request's Path values."""
        headers: list[tuple[str, str]] = []
        for b in bindings:
            q = f";q={b.q / 1000:.3f}".rstrip("0").rstrip(".") if b.q != 1000 else ""
            extra = ""
            if b.instance:
                extra += f";+sip.instance={b.instance}"
            if b.reg_id is not None:
                extra += f";reg-id={b.reg_id}"
            headers.append(("Contact", f"<{b.contact}>;expires={b.expires_in(now)}{q}{extra}"))
        headers.append(("Date", _http_date(now)))
        if path:
            headers.extend(("Path", p) for p in path)
        if any(b.is_outbound for b in bindings):
            headers.append(("Require", "outbound"))
        return headers


_LOCAL_TEXT: dict[tuple[str, int], str] = {}


def _local_text(local: tuple[str, int]) -> str:
    """'host:port' of a listening address (a handful per process), formatted once."""
    text = _LOCAL_TEXT.get(local)
    if text is None:
        text = f"{local[0]}:{local[1]}"
        if len(_LOCAL_TEXT) < 256:
            _LOCAL_TEXT[local] = text
    return text


_date_cache: tuple[int, str] = (-1, "")


def _http_date(now: float) -> str:
    """RFC 1123 date of ``now``, formatted once per second (every 200 OK carries one)."""
    global _date_cache
    second = int(now)
    if _date_cache[0] != second:
        _date_cache = (second, formatdate(second, usegmt=True))
    return _date_cache[1]


class Refusal(Exception):
    def __init__(self, status: int, reason: str | None, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers
