"""Veil's exception classes, one per gRPC status Veil answers, and the
warnings a read can raise. Each error carries the server's message
(`message`) and its status name (`code`); catch `VeilError` for all.
"""

import re

import pyarrow.flight as flight


class VeilError(Exception):
    """An error answered by Veil; `code` is the gRPC status name."""

    code = "unknown"

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class Unauthenticated(VeilError):
    """No valid token came with the request (missing, expired, or signed
    with a key the server does not trust): get a new one with `veil token`."""

    code = "unauthenticated"


class PermissionDenied(VeilError):
    """The caller may not do this (an admin action without its permission,
    a policy that cannot be enforced for this caller)."""

    code = "permission_denied"


class NotFound(VeilError):
    """No such dataset, column, policy or request, or one the caller may not
    see: both answer alike. The message suggests a spelling where it can."""

    code = "not_found"


class InvalidArgument(VeilError, ValueError):
    """The request is not valid (the query, a filter, a column, an
    argument); the message says what to change. Also a `ValueError`."""

    code = "invalid_argument"


class FailedPrecondition(VeilError):
    """The request can't run as things stand (a source that no longer
    matches its dataset's dictionary, a ticket planned before the files
    changed: plan the read again); the message says what to fix."""

    code = "failed_precondition"


class Unavailable(VeilError):
    """The server, or a source it reads, can't answer now: retry."""

    code = "unavailable"


class ResourceExhausted(VeilError):
    """The request went over a limit (rows, memory, time to plan, a
    privacy budget); the message names the limit."""

    code = "resource_exhausted"


class DeadlineExceeded(VeilError):
    """Something the read waited on ran out of time (a database dataset's
    statement past its connection's limit): read fewer rows, or ask for a
    longer limit."""

    code = "deadline_exceeded"


class AlreadyExists(VeilError):
    """Something of that name exists already (a dataset, a policy)."""

    code = "already_exists"


class Unimplemented(VeilError):
    """Veil does not offer this (a write, a transaction)."""

    code = "unimplemented"


class InvalidAddress(VeilError, ValueError):
    """The address is not one a Flight client can dial."""

    code = "invalid_address"


class CannotConnect(Unavailable):
    """No Veil answered at the address (not running, another port, or
    TLS on one side only)."""

    code = "unavailable"


_BY_WORDS = [
    ("unauthenticated", Unauthenticated),
    ("unauthorized", PermissionDenied),
    ("permission denied", PermissionDenied),
    ("not found", NotFound),
    ("invalid argument", InvalidArgument),
    ("failed precondition", FailedPrecondition),
    ("precondition failed", FailedPrecondition),
    ("unavailable", Unavailable),
    ("resource exhausted", ResourceExhausted),
    ("deadline exceeded", DeadlineExceeded),
    ("already exists", AlreadyExists),
    ("unimplemented", Unimplemented),
]


def _server_message(text: str) -> str:
    m = re.search(r"with message: (.*?)(?:\. gRPC client debug context|\. Client context|\. Detail:|$)", text, re.S)
    return (m.group(1) if m else text).strip()


def translate(err: Exception) -> VeilError:
    """pyarrow's Flight errors to Veil's, keeping the server's message."""
    text = str(err)
    head = text.split("with message:")[0].lower()
    if isinstance(err, flight.FlightUnauthenticatedError):
        cls = Unauthenticated
    elif isinstance(err, flight.FlightUnauthorizedError):
        cls = PermissionDenied
    elif isinstance(err, flight.FlightUnavailableError):
        cls = Unavailable
    elif isinstance(err, flight.FlightTimedOutError):
        cls = DeadlineExceeded
    else:
        cls = next((c for words, c in _BY_WORDS if words in head), VeilError)
    return cls(_server_message(text))


class RowPolicyWarning(UserWarning):
    """A read returned no rows, and a row policy filters what you see of
    the data: the policy may be why."""


class MaskedColumnWarning(UserWarning):
    """A read returned no rows, and its filter or query reads a column you
    see masked: it compared the masked values, not the originals."""
