"""Dialed digits → E.164 with a customer's dialing rules, and the premium-number test.

Rules (DOMAIN.md "Calls"), applied after dropping visual separators (space . - / ( )):
- the outbound prefix is stripped when the rest still makes a number (so with outbound ``0`` and
  national ``0``, ``00612345678`` and ``0612345678`` both reach +33612345678; ``000044…`` is needed for
  international, as on the customer's old PBX);
- ``+…`` stays; international prefix + number → ``+number``; national prefix + number →
  ``+<country code><number>``; with no national prefix (e.g. Italy) bare digits are national;
- the result must be 7 to 15 digits after ``+`` (E.164 bounds); anything else is not a number.
"""

from __future__ import annotations

from functools import lru_cache

from routing.model import DialingRules

_SEPARATORS = str.maketrans("", "", " .-/()\t")
MIN_E164_DIGITS = 7
MAX_E164_DIGITS = 15


def clean(dialed: str) -> str:
    """Drop visual separators; keep digits, ``+``, ``*`` and ``#``."""
    return dialed.translate(_SEPARATORS)


def _e164(rest: str) -> str | None:
    if rest.isascii() and rest.isdigit() and MIN_E164_DIGITS <= len(rest) <= MAX_E164_DIGITS:
        return "+" + rest
    return None


def _without_outbound(rules: DialingRules, digits: str) -> str | None:
    if digits.startswith("+"):
        return _e164(digits[1:])
    intl = rules.international_prefix
    if intl and digits.startswith(intl):
        return _e164(digits[len(intl) :])
    nat = rules.national_prefix
    if nat:
        if digits.startswith(nat):
            rest = digits[len(nat) :]
            return _e164(f"{rules.country_code}{rest}") if rest[:1] not in ("", "0") else None
        return None
    return _e164(f"{rules.country_code}{digits}")


def normalise(rules: DialingRules, dialed: str) -> str | None:
    """The E.164 form (``+33612345678``) of what a user dialed, or None if it is not a number."""
    digits = clean(dialed)
    out = rules.outbound_prefix
    if out and digits.startswith(out) and len(digits) > len(out):
        stripped = _without_outbound(rules, digits[len(out) :])
        if stripped is not None:
            return stripped
    return _without_outbound(rules, digits)


def premium_prefixes(rules: DialingRules) -> tuple[str, ...]:
    """Configured premium prefixes, else the national default (France: +338 = dialed 08xx)."""
    if rules.premium_prefixes is not None:
        return rules.premium_prefixes
    if rules.country_code == 33:
        return ("+338",)
    return ()


@lru_cache(maxsize=65536)
def _premium_by_metadata(e164: str) -> bool:
    import phonenumbers

    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.PREMIUM_RATE


def is_premium(rules: DialingRules, e164: str) -> bool:
    """True for the customer's national premium numbers (explicit prefixes, or France's 08xx);
    for other countries without configured prefixes, phonenumbers' premium-rate classification; and
    the platform's premium prefixes of any country (``extra_premium``)."""
    if rules.extra_premium and e164.startswith(rules.extra_premium):
        return True
    prefixes = premium_prefixes(rules)
    if prefixes:
        return e164.startswith(prefixes)
    return _premium_by_metadata(e164)
