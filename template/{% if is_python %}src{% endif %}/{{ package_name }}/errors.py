"""The three error kinds of the service and whether each is worth retrying.

A `DomainError` is a model that fails validation, an `ApplicationError` a business rule
that refuses, an `InfrastructureError` a network, RPC or database failure. Each carries a
`Kind`: transient errors (connection, timeout, rate limit, unavailable) are retried,
persistent ones (validation, auth, not found) are not.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum


class Kind(StrEnum):
    """Whether retrying can help; also the `kind` label of `errors_total`."""

    TRANSIENT = "transient"
    PERSISTENT = "persistent"


class ServiceError(Exception):
    """Base of the three kinds; `kind` says whether a retry can help."""

    default_kind = Kind.PERSISTENT

    def __init__(self, message: str, kind: Kind | None = None) -> None:
        super().__init__(message)
        self.kind = kind if kind is not None else self.default_kind


class DomainError(ServiceError):
    """A value that breaks the model's rules: retrying gives the same answer."""


class ApplicationError(ServiceError):
    """Business logic refused the request."""


class InfrastructureError(ServiceError):
    """The network, an RPC or a database failed; transient unless told otherwise."""

    default_kind = Kind.TRANSIENT


def classify(error: BaseException) -> Kind:
    """The kind of any exception: ours say it; timeouts and connection errors are transient."""
    if isinstance(error, ServiceError):
        return error.kind
    if isinstance(error, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return Kind.TRANSIENT
    return Kind.PERSISTENT


def http_status_kind(status: int) -> Kind:
    """Timeouts (408), rate limits (429) and server errors (5xx) are transient; other 4xx not."""
    if status in (408, 429) or status >= 500:
        return Kind.TRANSIENT
    return Kind.PERSISTENT
