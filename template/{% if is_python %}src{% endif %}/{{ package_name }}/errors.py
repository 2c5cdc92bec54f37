"""The three error kinds of the service and whether each is worth retrying.

A `DomainError` is a model that fails validation, an `ApplicationError` a business rule
that refuses, an `InfrastructureError` a network, RPC or database failure. Each carries a
`Kind`: transient errors (connection, timeout, rate limit, unavailable) are retried,
persistent ones (validation, auth, not found) are not.
"""

from __future__ import annotations

import asyncio
import math
import os
from decimal import Decimal
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


def os_reason(error: OSError) -> str:
    """An OS error in the C library's words (`No such file or directory`), the same in both flavours."""
    if error.errno:
        return os.strerror(error.errno)
    return error.strerror or str(error) or type(error).__name__


def number(value: float) -> str:
    """A number as log lines, error lines and the metrics page write it in both flavours.

    An integral value without `.0` (`30`), others in the shortest form that reads back the same,
    never with an exponent (`0.5`, `0.0000001`); `+Inf`, `-Inf`, `NaN` as Prometheus does.
    """
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer():
        return str(int(value))
    return format(Decimal(repr(value)), "f")
