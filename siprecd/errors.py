"""Typed errors that the SIP core turns into responses in one place.

Code anywhere below the SIP core raises a subclass of :class:`SIPError`; the UAS core catches it
and answers with ``code`` and ``reason``, adding ``headers`` (e.g. ``Warning``, ``Retry-After``,
``Unsupported``).  Nothing else builds error responses.
"""

from __future__ import annotations

from collections.abc import Sequence


class SIPError(Exception):
    """A request fails with a SIP final response."""

    code: int = 500
    reason: str = "Server Internal Error"

    def __init__(
        self,
        reason: str | None = None,
        *,
        code: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        if code is not None:
            self.code = code
        if reason is not None:
            self.reason = reason
        self.headers: list[tuple[str, str]] = list(headers)
        super().__init__(f"{self.code} {self.reason}")


class BadRequest(SIPError):
    """400: the message is SIP but malformed; ``reason`` says what and where."""

    code = 400
    reason = "Bad Request"


class NotAcceptableHere(SIPError):
    """488: the offer (SDP) cannot be accepted; a Warning header says why (RFC 3261 §20.43)."""

    code = 488
    reason = "Not Acceptable Here"

    def __init__(self, warning: str, *, agent: str = "siprecd") -> None:
        # Warning text is a quoted-string: strip characters that would break it.
        text = warning.replace("\\", "/").replace('"', "'")
        super().__init__(headers=[("Warning", f'399 {agent} "{text}"')])
        self.warning = warning


class ServiceUnavailable(SIPError):
    """503 with Retry-After: overload, no ports, draining, full disk."""

    code = 503
    reason = "Service Unavailable"

    def __init__(self, reason: str = "Service Unavailable", *, retry_after: int = 5) -> None:
        super().__init__(reason, headers=[("Retry-After", str(retry_after))])
        self.retry_after = retry_after
