"""Rating errors that carry their answer: the refusal or the file/row/reason to print."""

from __future__ import annotations


class RatingError(Exception):
    """Base of rating errors."""


class UnknownAccount(RatingError):
    """The call names an account (or DID) the RatingSetup does not know."""

    def __init__(self, kind: str, key: str | None) -> None:
        super().__init__(f"unknown {kind}: {key!r}")
        self.kind = kind
        self.key = key


class NoRate(RatingError):
    """A finished call whose destination matches no prefix (authorisation refuses these first)."""

    def __init__(self, destination: str, package: str) -> None:
        super().__init__(f"no rate for {destination} in package {package!r}")
        self.destination = destination
        self.package = package


class SetupError(RatingError):
    """The RatingSetup is inconsistent (unknown package, rate table, customer, bad money value)."""


class RateFileError(RatingError):
    """A rate file that cannot be imported; `problems` lists every (file, row, reason) found."""

    def __init__(self, problems: list[tuple[str, int, str]]) -> None:
        self.problems = problems
        first = "; ".join(f"{f}:{r}: {why}" for f, r, why in problems[:5])
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"{len(problems)} bad row(s): {first}{more}")
