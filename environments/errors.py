"""The project's own small set of errors; gateways turn library exceptions into these."""

from __future__ import annotations

from datetime import datetime


class GatewayError(Exception):
    """Talking to GitHub or Kubernetes failed."""


class NotFound(GatewayError):
    pass


class Conflict(GatewayError):
    """A write lost a race (stale resourceVersion) or the object already exists."""


class PermissionDenied(GatewayError):
    """401/403 that waiting will not fix: a token or RBAC problem."""


class Invalid(GatewayError):
    """The server rejected what we sent (422)."""


class Transient(GatewayError):
    """Worth retrying later: 5xx, 429, timeouts, connection errors."""


class RateLimited(Transient):
    """GitHub's budget is spent until `reset_at`."""

    def __init__(self, message: str, reset_at: datetime | None) -> None:
        super().__init__(message)
        self.reset_at = reset_at
