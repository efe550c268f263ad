"""Veil's Python client: governed datasets into pandas.

    import veil
    with veil.connect() as conn:           # VEIL_ADDRESS, VEIL_TOKEN
        df = conn.scan_as_pandas("clinical.trials", filter="age > 30")
"""

from .client import Connection, connect
from .errors import (
    AlreadyExists,
    CannotConnect,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidAddress,
    InvalidArgument,
    MaskedColumnWarning,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RowPolicyWarning,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    VeilError,
)

__all__ = [
    "AlreadyExists",
    "CannotConnect",
    "Connection",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidAddress",
    "InvalidArgument",
    "MaskedColumnWarning",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RowPolicyWarning",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "VeilError",
    "connect",
]
