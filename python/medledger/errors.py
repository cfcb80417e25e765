"""The exceptions medledger raises on purpose.

The Rust core has one error type; the binding maps each of its variants to one class
here, so Python code catches medledger errors without knowing where they came from.
Every error names the field that failed.
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "InvalidArgument",
    "InvalidBlock",
    "LimitExceeded",
    "MedledgerError",
    "Rejected",
]


class MedledgerError(Exception):
    """Base class of every error medledger raises on purpose."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class DecodeError(MedledgerError, ValueError):
    """Bytes that could not be decoded as the expected message."""

    def __init__(self, message: str, field: str, reason: str) -> None:
        super().__init__(message, field)
        self.reason = reason


class InvalidArgument(MedledgerError, ValueError):
    """An argument of the wrong shape: a key of the wrong length, an index out of range."""

    def __init__(self, message: str, field: str, reason: str) -> None:
        super().__init__(message, field)
        self.reason = reason


class InvalidBlock(MedledgerError):
    """A block that decodes but breaks a validation rule; `field` names the rule's field."""

    def __init__(self, message: str, field: str, reason: str) -> None:
        super().__init__(message, field)
        self.reason = reason


class LimitExceeded(MedledgerError):
    """A named maximum (`limit_name`) was exceeded: `actual` > `limit`."""

    def __init__(self, message: str, field: str, limit_name: str, limit: int, actual: int) -> None:
        super().__init__(message, field)
        self.limit_name = limit_name
        self.limit = limit
        self.actual = actual


class Rejected(MedledgerError):
    """A request the node refuses; `status` is the gRPC status code name that reports it
    (`INVALID_ARGUMENT`, `FAILED_PRECONDITION`, `ALREADY_EXISTS`, `RESOURCE_EXHAUSTED`,
    `NOT_FOUND`), and `field` names what was wrong."""

    def __init__(self, status: str, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", field)
        self.status = status
        self.reason = reason
